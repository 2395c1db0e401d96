package mvcc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

func describeEvents(evs []*mvccpb.Event) string {
	var parts []string
	for _, e := range evs {
		parts = append(parts, fmt.Sprintf("%s %s=%s@%d c%d v%d", e.Type, e.Kv.Key, e.Kv.Value, e.Kv.ModRevision, e.Kv.CreateRevision, e.Kv.Version))
	}
	return strings.Join(parts, "; ")
}

// TestChangesReplayHistory: the change log replays what the writes did,
// capped by revisions, and is kept at the compacted revision but not below.
func TestChangesReplayHistory(t *testing.T) {
	s := newTestShard(t)
	s.put("a", "1")                                                          // 2
	s.put("b", "1")                                                          // 3
	if _, err := s.txn(txnOf(putOp("a", "2"), delOp("b", ""))); err != nil { // 4
		t.Fatal(err)
	}
	s.put("c", "1") // 5

	evs, more, err := s.sh.Changes(context.Background(), 2, 5, 100)
	if err != nil {
		t.Fatal(err)
	}
	want := "PUT a=1@2 c2 v1; PUT b=1@3 c3 v1; PUT a=2@4 c2 v2; DELETE b=@4 c0 v0; PUT c=1@5 c5 v1"
	if got := describeEvents(evs); got != want || more != 0 {
		t.Fatalf("changes:\n got %s (more %d)\nwant %s", got, more, want)
	}
	// A cap of two revisions stops before the third and says where.
	evs, more, _ = s.sh.Changes(context.Background(), 3, 5, 2)
	if got := describeEvents(evs); got != "PUT b=1@3 c3 v1; PUT a=2@4 c2 v2; DELETE b=@4 c0 v0" || more != 5 {
		t.Fatalf("capped: %s more %d", got, more)
	}

	prev, err := s.sh.PrevKV([]byte("a"), 4)
	if err != nil || prev == nil || string(prev.Value) != "1" || prev.ModRevision != 2 {
		t.Fatalf("prev of a at 4: %v %v", prev, err)
	}
	if prev, _ := s.sh.PrevKV([]byte("c"), 5); prev != nil {
		t.Fatalf("c did not exist before 5: %v", prev)
	}

	s.compact(4)
	if _, _, err := s.sh.Changes(context.Background(), 3, 5, 100); !errors.Is(err, ErrCompacted) {
		t.Fatalf("changes below the compacted revision: %v", err)
	}
	evs, _, err = s.sh.Changes(context.Background(), 4, 5, 100)
	if got := describeEvents(evs); err != nil || got != "PUT a=2@4 c2 v2; DELETE b=@4 c0 v0; PUT c=1@5 c5 v1" {
		t.Fatalf("changes from the compacted revision: %s %v", got, err)
	}
	if prev, _ := s.sh.PrevKV([]byte("a"), 4); prev != nil {
		t.Fatalf("prev_kv below the compacted revision must be absent: %v", prev)
	}
	// The next compaction removes what the previous one kept.
	s.put("a", "3") // 6
	s.compact(6)
	evs, _, err = s.sh.Changes(context.Background(), 6, 6, 100)
	if got := describeEvents(evs); err != nil || got != "PUT a=3@6 c2 v3" {
		t.Fatalf("after Compact(6): %s %v", got, err)
	}
}
