package txncoord

import (
	"context"
	"errors"
	"testing"

	"github.com/lni/dragonboat/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/shard"
)

// TestRemoteNotReadyIsRetried checks what crosses the Internal service
// when the meta leader cannot confirm its leadership yet (its replica
// restarting or dropping the read index): the caller gets an error it
// retries, as it would from its own replica, not an unknown error that
// reaches the client.
func TestRemoteNotReadyIsRetried(t *testing.T) {
	ctx := context.Background()
	for _, cause := range []error{dragonboat.ErrShardNotReady, dragonboat.ErrShardNotFound, shard.ErrNotLeader} {
		meta := &memMeta{}
		tso := NewTSO(meta, 10)
		if err := tso.Start(ctx); err != nil {
			t.Fatal(err)
		}
		meta.confirmErr = cause
		_, err := tso.Current(ctx)
		if !errors.Is(err, cause) {
			t.Fatalf("Current with the meta replica failing with %q: %v", cause, err)
		}
		answer := ToRemote(err)
		if status.Code(answer) != codes.Unavailable {
			t.Errorf("%q crosses the Internal service as %v, want Unavailable", cause, answer)
		}
		if got := FromRemote(answer); !IsRetryable(got) {
			t.Errorf("%q from the meta leader arrives as %v, which is not retried", cause, got)
		}
		tso.Stop()
	}

	// Other errors keep their message and are not retried.
	answer := ToRemote(ErrLeaseTTLTooLarge)
	if status.Code(answer) != codes.Unknown || status.Convert(answer).Message() != ErrLeaseTTLTooLarge.Error() {
		t.Errorf("ToRemote(%q) = %v", ErrLeaseTTLTooLarge, answer)
	}
	if IsRetryable(FromRemote(answer)) {
		t.Errorf("%q from another member is retried", ErrLeaseTTLTooLarge)
	}
}
