package testcluster

import (
	"math/rand/v2"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defragment (etcdctl defrag) gives back the space of data that was
// deleted and compacted, on every member it is asked of.
func TestDefragmentGivesSpaceBack(t *testing.T) {
	c := Start(t, 3)
	ctx := ctxT(t, 2*time.Minute)
	cl := c.Client(t, 0)
	value := make([]byte, 4096)
	for i := range value {
		value[i] = byte(rand.IntN(256)) // Pebble compresses what it stores
	}
	for i := 0; i < 2000; i += 50 {
		var ops []clientv3.Op
		for j := i; j < i+50; j++ {
			ops = append(ops, clientv3.OpPut(string(rune('a'+j%26))+string(rune(j)), string(value)))
		}
		if _, err := cl.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	del, err := cl.Delete(ctx, "", clientv3.WithFromKey())
	if err != nil || del.Deleted != 2000 {
		t.Fatalf("delete: %v %v", del, err)
	}
	if _, err := cl.Compact(ctx, del.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	for i, n := range c.Nodes {
		before, err := cl.Status(ctx, n.ClientURL)
		if err != nil {
			t.Fatal(err)
		}
		if before.DbSize < 4<<20 {
			t.Fatalf("member %d holds %d bytes before defragmenting, want the 8 MiB written", i, before.DbSize)
		}
		if _, err := cl.Defragment(ctx, n.ClientURL); err != nil {
			t.Fatalf("defragment member %d: %v", i, err)
		}
		// At least half of the 8 MiB deleted is given back (the store keeps
		// an empty memtable's allocation).
		waitFor(t, "the space is given back", func() bool {
			after, err := cl.Status(ctx, n.ClientURL)
			return err == nil && before.DbSize-after.DbSize >= 4<<20
		})
	}
	// The store still serves.
	if _, err := cl.Put(ctx, "after", "defrag"); err != nil {
		t.Fatal(err)
	}
	if resp, err := c.Client(t, 2).Get(ctx, "after"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get after defragmenting: %v %v", resp, err)
	}
}
