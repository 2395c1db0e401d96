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

// TestLocalNotLeaderIsRetried checks the local TSO's answer when this
// member has just lost the meta group's leadership: "not the leader, the
// leader is X" names the meta leader, which must not end a caller's retries
// (a watch being created got "etcdserver: no leader" at once) nor pass for
// the leader of a data shard (a write would be forwarded there).
func TestLocalNotLeaderIsRetried(t *testing.T) {
	ctx := context.Background()
	meta := &memMeta{}
	tso := NewTSO(meta, 10)
	if err := tso.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer tso.Stop()
	const self = 1
	r := NewRoutedTSO(tso, self, func() uint64 { return self }, nil)
	moved := &shard.NotLeaderError{ShardID: shard.MetaShardID, Leader: 2}

	meta.mu.Lock()
	meta.confirmErr = moved
	meta.mu.Unlock()
	_, err := r.Current(ctx)
	if !IsRetryable(err) || shard.LeaderElsewhere(err) != 0 {
		t.Fatalf("Current after the meta leadership moved: %v (retryable %v, names leader %x)", err, IsRetryable(err), shard.LeaderElsewhere(err))
	}
	// Retry asks again, and gets the revision once leadership is back.
	attempts := 0
	err = Retry(ctx, func() error {
		attempts++
		if attempts == 2 {
			meta.mu.Lock()
			meta.confirmErr = nil
			meta.mu.Unlock()
		}
		_, err := r.Current(ctx)
		return err
	})
	if err != nil || attempts < 2 {
		t.Fatalf("Retry of Current: %v after %d attempts", err, attempts)
	}

	// Allocating past the window persists a new ceiling through the meta
	// group; a leadership lost there is retried too.
	meta.mu.Lock()
	meta.failNext = moved
	meta.mu.Unlock()
	var allocErr error
	for range 20 {
		if _, allocErr = r.Allocate(ctx, 1); allocErr != nil {
			break
		}
	}
	if !IsRetryable(allocErr) || shard.LeaderElsewhere(allocErr) != 0 {
		t.Fatalf("Allocate after the meta leadership moved: %v", allocErr)
	}
}
