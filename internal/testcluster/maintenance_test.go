package testcluster

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/placement"
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

// Status reports etcd's Raft indexes on every member: the committed index
// counts the entries of the elections and the initial membership before
// any write, the applied index never passes it, and a write moves both on
// every member.
func TestStatusReportsRaftIndexes(t *testing.T) {
	c := Start(t, 3)
	ctx := ctxT(t, time.Minute)
	cl := c.Client(t)
	before := make([]*clientv3.StatusResponse, len(c.Nodes))
	for i, n := range c.Nodes {
		st, err := cl.Status(ctx, n.ClientURL)
		if err != nil {
			t.Fatal(err)
		}
		if st.RaftIndex == 0 || st.RaftAppliedIndex > st.RaftIndex || st.Leader == 0 || st.RaftTerm == 0 {
			t.Fatalf("member %d before any write: raft index %d, applied %d, leader %x, term %d", i, st.RaftIndex, st.RaftAppliedIndex, st.Leader, st.RaftTerm)
		}
		before[i] = st
	}
	if _, err := cl.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	for i, n := range c.Nodes {
		waitFor(t, fmt.Sprintf("member %d applies the write", i), func() bool {
			st, err := cl.Status(ctx, n.ClientURL)
			return err == nil && st.RaftIndex > before[i].RaftIndex &&
				st.RaftAppliedIndex > before[i].RaftAppliedIndex && st.RaftAppliedIndex <= st.RaftIndex
		})
	}
}

// A snapshot taken through a follower of a three-member cluster, restored
// into every member's data directory (as etcdutl snapshot restore is used
// for etcd), makes a new three-member cluster: every member answers as the
// old cluster did at the snapshot's revision, writes go on from the next
// revision, and the cluster survives losing its data leader.
func TestSnapshotRestoresThreeMembers(t *testing.T) {
	c := Start(t, 3)
	ctx := ctxT(t, 2*time.Minute)
	cl := c.Client(t)
	for i := range 50 {
		if _, err := cl.Put(ctx, fmt.Sprintf("k%02d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	split(t, c, 0, "k25")
	lease, err := cl.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	last, err := cl.Txn(ctx).Then(clientv3.OpPut("k10", "txn"), clientv3.OpPut("k40", "txn", clientv3.WithLease(lease.ID))).Commit()
	if err != nil {
		t.Fatal(err)
	}
	rev := last.Header.Revision
	want, err := cl.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		t.Fatal(err)
	}
	wantHash, err := cl.HashKV(ctx, c.Nodes[0].ClientURL, rev)
	if err != nil {
		t.Fatal(err)
	}

	follower := (c.Leader() + 1) % len(c.Nodes)
	rc, err := c.Client(t, follower).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "snap.db")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	f.Close()
	if _, err := cl.Put(ctx, "after", "snapshot"); err != nil {
		t.Fatal(err)
	}

	c.StopAll()
	all := make([]int, len(c.Nodes))
	for i, n := range c.Nodes {
		all[i] = i
		if err := os.RemoveAll(n.cfg.DataDir); err != nil {
			t.Fatal(err)
		}
		if _, err := placement.Restore(file, n.cfg.DataDir); err != nil {
			t.Fatal(err)
		}
	}
	c.Restart(all...)
	for i := range c.Nodes {
		got, err := c.Client(t, i).Get(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(rev))
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Kvs) != len(want.Kvs) {
			t.Fatalf("member %d: %d keys at revision %d, want %d", i, len(got.Kvs), rev, len(want.Kvs))
		}
		for j := range got.Kvs {
			if !proto.Equal(got.Kvs[j], want.Kvs[j]) {
				t.Fatalf("member %d: %v, want %v", i, got.Kvs[j], want.Kvs[j])
			}
		}
		h, err := cl.HashKV(ctx, c.Nodes[i].ClientURL, rev)
		if err != nil || h.Hash != wantHash.Hash {
			t.Fatalf("member %d: HashKV %v %v, want %d", i, h, err, wantHash.Hash)
		}
	}
	cl = c.Client(t)
	if resp, err := cl.Get(ctx, "after"); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("a write after the snapshot was restored: %v %v", resp, err)
	}
	ttl, err := cl.TimeToLive(ctx, lease.ID, clientv3.WithAttachedKeys())
	if err != nil || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != "k40" {
		t.Fatalf("restored lease: %v %v", ttl, err)
	}
	// A client of the survivors only: a put in flight on a stopped member
	// fails with Unavailable, as it would against etcd.
	dead := c.Leader()
	c.Stop(dead)
	put, err := c.Client(t, (dead+1)%3, (dead+2)%3).Put(ctx, "next", "v")
	if err != nil || put.Header.Revision != rev+1 {
		t.Fatalf("first write after the restore, its data leader stopped: %v %v (want revision %d)", put, err, rev+1)
	}
}
