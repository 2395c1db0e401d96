package watchfanout

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/shard"
)

// storeSource is a shard replica as the group sees it, over a real shard
// in an in-memory store: the test applies the writes and decides what the
// replica publishes and when.
type storeSource struct {
	t     *testing.T
	id    uint64
	sh    *mvcc.Shard
	index *uint64 // the store's applied index, shared by its shards

	mu       sync.Mutex
	observer shard.Observer
	resolved int64
}

func (s *storeSource) ShardID() uint64    { return s.id }
func (s *storeSource) Shard() *mvcc.Shard { return s.sh }
func (s *storeSource) ResolveNow()        {}
func (s *storeSource) Observe(o shard.Observer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.observer = o
}

func (s *storeSource) Resolved() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resolved
}

// put applies a put at rev, as the shard's apply does, and publishes it
// when a group observes the shard.
func (s *storeSource) put(key string, rev int64) {
	s.t.Helper()
	w := s.sh.NewWriter()
	w.CaptureEvents()
	txn := &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte("v")}}}}}
	if _, _, err := w.ApplyTxn(context.Background(), rev, txn, nil); err != nil {
		s.t.Fatal(err)
	}
	*s.index++
	if err := w.Commit(*s.index); err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resolved = max(s.resolved, rev)
	if s.observer != nil {
		s.observer.Observe(shard.FeedItem{Events: w.Events(), Subs: w.EventSubs(), Resolved: rev})
	}
}

// splitFixture opens an in-memory store whose shard 2 holds every key, and
// a hub over that shard's replica; both close when the test ends.
func splitFixture(t *testing.T) (*mvcc.Store, *storeSource, *Hub) {
	t.Helper()
	st, err := mvcc.Open("", mvcc.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sh, err := st.OpenShard(2, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	parent := &storeSource{t: t, id: 2, sh: sh, index: new(uint64), resolved: 1}
	hub := NewHub([]Source{parent}, func(context.Context) (int64, error) { return 1, nil }, nil)
	t.Cleanup(hub.Close)
	return st, parent, hub
}

// split applies a split of the source's shard at key, the keys from key on
// going to shard child.
func (s *storeSource) split(key string, child uint64) {
	s.t.Helper()
	w := s.sh.NewWriter()
	if err := w.Split([]byte(key), child); err != nil {
		s.t.Fatal(err)
	}
	*s.index++
	if err := w.Commit(*s.index); err != nil {
		s.t.Fatal(err)
	}
}

// A split's child whose replica applied its writes, and the leader's last
// resolved marker, before it joined the group publishes nothing more while
// the cluster is idle. The group must still release what it took from the
// child's change log, and the parent's writes it held back meanwhile.
func TestChildJoiningIdleReleasesHeldEvents(t *testing.T) {
	st, parent, hub := splitFixture(t)
	stream := hub.NewStream()
	defer stream.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := stream.Watch(ctx, AutoWatchID, []byte("k"), []byte("l"), 0, nil); err != nil {
		t.Fatal(err)
	}

	// The parent splits at k5; the child's replica is not serving yet.
	parent.split("k5", 3)
	childShard, err := st.OpenShard(3, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	child := &storeSource{t: t, id: 3, sh: childShard, index: parent.index}
	child.put("k7", 2)  // not observed: applied before the child joins
	parent.put("k2", 3) // observed, held back: the spans do not cover the key space
	for held := false; !held; {
		hub.g.mu.Lock()
		held = len(hub.g.pending[3]) == 1
		hub.g.mu.Unlock()
		if ctx.Err() != nil {
			t.Fatal("the group never took the parent's write")
		}
		time.Sleep(time.Millisecond)
	}
	child.mu.Lock()
	child.resolved = 3 // the leader's marker, applied before the child joins
	child.mu.Unlock()
	hub.AddSource(child)

	var got []string
	for len(got) < 2 {
		select {
		case r := <-stream.Chan():
			for _, ev := range r.Events {
				got = append(got, string(ev.Kv.Key))
			}
		case <-ctx.Done():
			t.Fatalf("the watch got %v, want [k7 k2]", got)
		}
	}
	if got[0] != "k7" || got[1] != "k2" {
		t.Fatalf("the watch got %v, want [k7 k2]", got)
	}
}

// A response's prev_kv is looked up when it is sent, and by then the shard
// that held the key may no longer hold it here: a split shrank it and the
// child's replica has not joined yet. The key's versions are in the node's
// store all the same, and prev_kv must not go missing.
func TestPrevKVAfterTheKeysShardMoved(t *testing.T) {
	_, parent, hub := splitFixture(t)
	parent.put("k7", 2)
	parent.put("k7", 3)
	prevOf := func() int64 {
		t.Helper()
		prev, err := hub.PrevKV([]byte("k7"), 3)
		if err != nil {
			t.Fatal(err)
		}
		if prev == nil {
			return 0
		}
		return prev.ModRevision
	}
	if got := prevOf(); got != 2 {
		t.Fatalf("prev_kv of k7 at 3 before the split: modified at %d, want 2", got)
	}

	parent.split("k5", 3)
	if got := prevOf(); got != 2 {
		t.Fatalf("prev_kv of k7 at 3 after the split, before the child joined: modified at %d, want 2", got)
	}
}
