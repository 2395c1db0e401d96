package testcluster

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestCommitIndexSavesAreNotSynced: on three members, one client's puts
// cost each member one sync of its Raft log per put, not two: the saves
// of a state whose commit index alone moved are written without a sync
// (placement/logscan.go). Every acknowledged put is there after all
// members restart.
func TestCommitIndexSavesAreNotSynced(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the Raft log store's syncs are watched on Linux only")
	}
	c := Start(t, 3, WithRaftTimings(100*time.Millisecond, time.Second))
	ctx := ctxT(t, time.Minute)
	cl := c.Client(t, c.Leader())
	putRetry(ctx, t, cl, "warm", "up")

	type counts struct{ ended, skipped uint64 }
	sample := func() []counts {
		var cs []counts
		for _, n := range c.Nodes {
			e, s := n.LogSyncs()
			cs = append(cs, counts{e, s})
		}
		return cs
	}
	const puts = 100
	before := sample()
	for i := range puts {
		if _, err := cl.Put(ctx, fmt.Sprintf("k%03d", i), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	after := sample()
	for i := range c.Nodes {
		ended, skipped := after[i].ended-before[i].ended, after[i].skipped-before[i].skipped
		t.Logf("member %d: %d syncs, %d skipped, for %d puts", i, ended, skipped, puts)
		// Each put's entry is synced on every member (a follower may not
		// have synced the last ones yet: the leader needs one of them);
		// before, each member also synced the commit index that followed.
		if ended < puts*9/10 || ended > puts*3/2 {
			t.Errorf("member %d synced its Raft log %d times for %d puts one after another, want one sync per put", i, ended, puts)
		}
		if skipped < puts/2 {
			t.Errorf("member %d skipped %d syncs for %d puts: the commit index saves were synced", i, skipped, puts)
		}
	}

	c.StopAll()
	c.Restart(0, 1, 2)
	cl = c.Client(t)
	waitFor(t, "the restarted cluster answers", func() bool {
		_, err := cl.Get(ctx, "warm")
		return err == nil
	})
	got, err := cl.Get(ctx, "k", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Kvs) != puts {
		t.Fatalf("after a restart of every member, %d of %d acknowledged puts are there", len(got.Kvs), puts)
	}
	for i, kv := range got.Kvs {
		if string(kv.Key) != fmt.Sprintf("k%03d", i) || string(kv.Value) != fmt.Sprint(i) {
			t.Fatalf("after a restart, key %d is %s=%s", i, kv.Key, kv.Value)
		}
	}
}
