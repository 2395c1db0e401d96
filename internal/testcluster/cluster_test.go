package testcluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Every node serves every request: writes and linearizable reads through
// followers reach the leader, serializable reads and watches are served by
// each node's own replica, and leases work through any node.
func TestEveryNodeServes(t *testing.T) {
	c := Start(t, 3)
	ctx := ctxT(t, time.Minute)
	clients := make([]*clientv3.Client, 3)
	for i := range clients {
		clients[i] = c.Client(t, i)
	}
	// A watcher on every node.
	watches := make([]clientv3.WatchChan, 3)
	for i, cl := range clients {
		watches[i] = cl.Watch(ctx, "k", clientv3.WithPrefix())
	}
	var revs []int64
	for i := range 30 {
		resp, err := clients[i%3].Put(ctx, fmt.Sprintf("k%02d", i), fmt.Sprint(i))
		if err != nil {
			t.Fatalf("put through node %d: %v", i%3, err)
		}
		revs = append(revs, resp.Header.Revision)
	}
	if !slices.IsSorted(revs) || len(slices.Compact(slices.Clone(revs))) != len(revs) {
		t.Fatalf("revisions of sequential puts not strictly increasing: %v", revs)
	}
	for i, cl := range clients {
		resp, err := cl.Get(ctx, "k", clientv3.WithPrefix())
		if err != nil || len(resp.Kvs) != 30 || resp.Header.Revision < revs[29] {
			t.Fatalf("linearizable get through node %d: %v, %d keys at %d (last put %d)", i, err, len(resp.Kvs), resp.Header.Revision, revs[29])
		}
	}
	for i, w := range watches {
		var got []int64
		for len(got) < 30 {
			select {
			case wr := <-w:
				if err := wr.Err(); err != nil {
					t.Fatalf("watch on node %d: %v", i, err)
				}
				for _, ev := range wr.Events {
					got = append(got, ev.Kv.ModRevision)
				}
			case <-ctx.Done():
				t.Fatalf("watch on node %d saw %d of 30 puts", i, len(got))
			}
		}
		if !slices.Equal(got, revs) {
			t.Fatalf("watch on node %d saw revisions %v, want %v", i, got, revs)
		}
	}
	// Serializable reads catch up on every node.
	for i, cl := range clients {
		waitFor(t, fmt.Sprintf("node %d applies every put", i), func() bool {
			resp, err := cl.Get(ctx, "k", clientv3.WithPrefix(), clientv3.WithSerializable())
			return err == nil && len(resp.Kvs) == 30
		})
	}

	// Members, with their client URLs (for clientv3's endpoint sync).
	for i, cl := range clients {
		ml, err := cl.MemberList(ctx)
		if err != nil || len(ml.Members) != 3 {
			t.Fatalf("member list through node %d: %v %v", i, err, ml)
		}
		var urls []string
		for _, m := range ml.Members {
			urls = append(urls, m.ClientURLs...)
		}
		for _, n := range c.Nodes {
			if !slices.Contains(urls, n.ClientURL) {
				t.Fatalf("member list through node %d lacks %s: %v", i, n.ClientURL, ml.Members)
			}
		}
	}

	// Leases through a node that does not lead the meta group.
	follower := (c.MetaLeader() + 1) % 3
	cl := clients[follower]
	lease, err := cl.Grant(ctx, 60)
	if err != nil {
		t.Fatalf("grant through follower: %v", err)
	}
	if _, err := clients[(follower+1)%3].Put(ctx, "leased", "v", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatalf("put with lease: %v", err)
	}
	ka, err := cl.KeepAliveOnce(ctx, lease.ID)
	if err != nil || ka.TTL != 60 {
		t.Fatalf("keep-alive through follower: %v %v", err, ka)
	}
	ttl, err := cl.TimeToLive(ctx, lease.ID, clientv3.WithAttachedKeys())
	if err != nil || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != "leased" {
		t.Fatalf("time-to-live through follower: %v %v", err, ttl)
	}
	if _, err := cl.Revoke(ctx, lease.ID); err != nil {
		t.Fatalf("revoke through follower: %v", err)
	}
	for i, c := range clients {
		if resp, err := c.Get(ctx, "leased"); err != nil || len(resp.Kvs) != 0 {
			t.Fatalf("node %d after revoke: %v %v", i, err, resp)
		}
	}
}

// When the leaders die, another node takes over; no acknowledged write is
// lost, revisions keep increasing, and the restarted node catches up.
func TestLeaderFailover(t *testing.T) {
	c := Start(t, 3)
	ctx := ctxT(t, 2*time.Minute)
	cl := c.Client(t)
	written := map[string]int64{}
	put := func(k string) {
		t.Helper()
		var resp *clientv3.PutResponse
		var err error
		for range 50 { // clientv3 does not retry puts on an unavailable endpoint
			if resp, err = cl.Put(ctx, k, k); err == nil {
				written[k] = resp.Header.Revision
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("put %s: %v", k, err)
	}
	for i := range 20 {
		put(fmt.Sprintf("a%02d", i))
	}
	before := written["a19"]
	dead := c.Leader()
	c.Stop(dead)
	survivor := c.Client(t, (dead+1)%3, (dead+2)%3)
	cl = survivor
	for i := range 20 {
		put(fmt.Sprintf("b%02d", i))
	}
	if written["b00"] <= before {
		t.Fatalf("revision went backwards across the failover: %d after %d", written["b00"], before)
	}
	resp, err := survivor.Get(ctx, "", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 40 {
		t.Fatalf("after failover: %v, %d keys", err, len(resp.Kvs))
	}
	for _, kv := range resp.Kvs {
		if written[string(kv.Key)] != kv.ModRevision {
			t.Fatalf("%s at %d, written at %d", kv.Key, kv.ModRevision, written[string(kv.Key)])
		}
	}
	c.Restart(dead)
	back := c.Client(t, dead)
	waitFor(t, "the restarted node catches up", func() bool {
		resp, err := back.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithSerializable())
		return err == nil && len(resp.Kvs) == 40
	})
	if resp, err := back.Put(ctx, "c", "c"); err != nil || resp.Header.Revision <= written["b19"] {
		t.Fatalf("put through the restarted node: %v %v", err, resp)
	}
}

// A node cut off from the majority must not answer a linearizable read
// from its old state.
func TestCutOffNodeServesNoStaleRead(t *testing.T) {
	noStaleReadOnCutOff(t, Start(t, 3, WithFaults()))
}

// The same once the key space is split: linearizable reads then run at the
// TSO's revision (which a cut-off member still gets from the meta leader's
// client port), and a replica cut off from its shard must not serve it.
func TestCutOffNodeServesNoStaleReadAcrossShards(t *testing.T) {
	c := Start(t, 3, WithFaults())
	split(t, c, 0, "m")
	noStaleReadOnCutOff(t, c)
}

func noStaleReadOnCutOff(t *testing.T, c *Cluster) {
	ctx := ctxT(t, time.Minute)
	cl := c.Client(t)
	if _, err := cl.Put(ctx, "k", "old"); err != nil {
		t.Fatal(err)
	}
	for _, victim := range []int{c.Leader(), c.MetaLeader()} {
		c.Cut(victim)
		others := c.Client(t, (victim+1)%3, (victim+2)%3)
		waitFor(t, "the majority writes", func() bool {
			// As a client with a request timeout: a write sent to the cut-off
			// leader before the others noticed fails, and is tried again.
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err := others.Put(pctx, "k", fmt.Sprint("new", victim))
			return err == nil
		})
		cut := c.Client(t, victim)
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		resp, err := cut.Get(rctx, "k")
		cancel()
		if err == nil && string(resp.Kvs[0].Value) != fmt.Sprint("new", victim) {
			t.Fatalf("cut-off node %d answered a stale read: %s", victim, resp.Kvs[0].Value)
		}
		// Serializable reads are allowed to be stale.
		if _, err := cut.Get(ctx, "k", clientv3.WithSerializable()); err != nil {
			t.Fatalf("serializable read on cut-off node: %v", err)
		}
		c.Heal(victim)
		waitFor(t, "the healed node serves the new value", func() bool {
			gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			resp, err := cut.Get(gctx, "k")
			return err == nil && string(resp.Kvs[0].Value) == fmt.Sprint("new", victim)
		})
	}
}

// A lease's remaining TTL survives a change of the meta group's leader: no
// fresh full TTL, no early expiry.
func TestLeaseSurvivesLeaderChange(t *testing.T) {
	c := Start(t, 3, WithLeaseCheckpointInterval(200*time.Millisecond))
	ctx := ctxT(t, time.Minute)
	cl := c.Client(t)
	granted := time.Now()
	lease, err := cl.Grant(ctx, 20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Put(ctx, "owned", "v", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	w := cl.Watch(ctx, "owned")
	time.Sleep(3 * time.Second)
	old := c.MetaLeader()
	c.Stop(old)
	rest := c.Client(t, (old+1)%3, (old+2)%3)
	var ttl *clientv3.LeaseTimeToLiveResponse
	waitFor(t, "time-to-live after the leader change", func() bool {
		ttl, err = rest.TimeToLive(ctx, lease.ID)
		if err != nil {
			t.Logf("time-to-live: %v", err)
		}
		return err == nil
	})
	// 20 s granted, at least 3 s gone: a fresh TTL would be 20. Nor may
	// it have lost more than the time that went by (the election's
	// length depends on the machine's load), plus a checkpoint interval
	// and rounding.
	gone := int64(time.Since(granted) / time.Second)
	if ttl.TTL > 17 || ttl.TTL < 20-gone-2 {
		t.Fatalf("remaining TTL after the leader change %d, %d s after the grant: want %d..17", ttl.TTL, gone, 20-gone-2)
	}
	// Not early either: the key is still there, and is deleted when the
	// rest runs out.
	if resp, err := rest.Get(ctx, "owned"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("key of a live lease: %v %v", err, resp)
	}
	start := time.Now()
	for wr := range w {
		if len(wr.Events) > 0 && wr.Events[0].Type == mvccpb.DELETE {
			break
		}
	}
	if gone := time.Since(start); gone < time.Duration(ttl.TTL-2)*time.Second {
		t.Fatalf("lease expired after %v, %d s were left", gone, ttl.TTL)
	}
}

// leaderless returns a member of a three-member cluster that leads
// neither the meta group nor the data shard, and the other two.
func leaderless(c *Cluster) (int, []int) {
	data, meta := c.Leader(), c.MetaLeader()
	idle := 3 - data - meta
	if data == meta {
		idle = (data + 1) % 3
	}
	var others []int
	for i := range 3 {
		if i != idle {
			others = append(others, i)
		}
	}
	return idle, others
}

// putRetry puts key until a put is acknowledged. With one of three members
// down, a stall of either of the two others (a busy test machine) can cost
// the leader its quorum for an election timeout; a put pending then fails
// with "leader changed", its outcome unknown, and is sent again, as a
// client does with a write it may repeat.
func putRetry(ctx context.Context, t *testing.T, cl *clientv3.Client, key, val string) {
	t.Helper()
	for {
		_, err := cl.Put(ctx, key, val)
		if err == nil {
			return
		}
		if !errors.Is(err, rpctypes.ErrLeaderChanged) {
			t.Fatal(err)
		}
		t.Logf("put %s: %v; sending it again", key, err)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A node that was down while the others wrote many snapshots' worth of
// entries catches up with the same keys, revisions and history, then
// serves. (Whether the leader streams a snapshot or its log is dragonboat's
// choice; with these counts the leader has compacted its log and sends a
// snapshot of the data shard.)
func TestRestartedNodeCatchesUp(t *testing.T) {
	c := Start(t, 3, WithSnapshotCount(50))
	ctx := ctxT(t, 2*time.Minute)
	c.Stop(2)
	cl := c.Client(t, 0, 1)
	for i := range 1000 {
		putRetry(ctx, t, cl, fmt.Sprintf("k%04d", i), fmt.Sprint(i))
	}
	if _, err := cl.Delete(ctx, "k0000"); err != nil {
		t.Fatal(err)
	}
	want, err := cl.Get(ctx, "k", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	c.Restart(2)
	back := c.Client(t, 2)
	waitFor(t, "the restarted node catches up", func() bool {
		got, err := back.Get(ctx, "k", clientv3.WithPrefix(), clientv3.WithSerializable())
		return err == nil && len(got.Kvs) == len(want.Kvs)
	})
	got, err := back.Get(ctx, "k", clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithRev(want.Header.Revision))
	if err != nil {
		t.Fatal(err)
	}
	for i, kv := range got.Kvs {
		w := want.Kvs[i]
		if string(kv.Key) != string(w.Key) || string(kv.Value) != string(w.Value) || kv.ModRevision != w.ModRevision || kv.CreateRevision != w.CreateRevision {
			t.Fatalf("restarted node has %s=%s@%d, the others %s=%s@%d", kv.Key, kv.Value, kv.ModRevision, w.Key, w.Value, w.ModRevision)
		}
	}
	// History before the snapshot came with it: the deleted key's last
	// version is readable at an older revision.
	old, err := back.Get(ctx, "k0000", clientv3.WithSerializable(), clientv3.WithRev(want.Header.Revision-1))
	if err != nil || len(old.Kvs) != 1 {
		t.Fatalf("k0000 before its deletion on the restarted node: %v %v", err, old)
	}
}

// --snapshot-count counts writes, as etcd's does, though a Raft entry
// holds a batch of them: after concurrent puts, every member has asked
// for about one snapshot per --snapshot-count writes, has compacted its
// log behind them, and serves every key.
func TestSnapshotCountCountsWrites(t *testing.T) {
	const count, clients, each = 100, 32, 50
	c := Start(t, 3, WithSnapshotCount(count))
	ctx := ctxT(t, 2*time.Minute)
	cl := c.Client(t, 0, 1, 2)
	errc := make(chan error, clients)
	for g := range clients {
		go func() {
			for i := range each {
				if _, err := cl.Put(ctx, fmt.Sprintf("k%02d-%02d", g, i), "v"); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range clients {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	for i := range c.Nodes {
		member := c.Client(t, i)
		waitFor(t, fmt.Sprintf("member %d applies every put", i), func() bool {
			got, err := member.Get(ctx, "k", clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithCountOnly())
			return err == nil && got.Count == clients*each
		})
	}
	for i, n := range c.Nodes {
		asked := n.SnapshotsRequested()
		first, last, err := n.DataLogRange()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("member %d: %d snapshots asked for after %d writes; log entries %d to %d", i, asked, clients*each, first, last)
		// A request is refused while the one before is being taken.
		if asked < clients*each/count/2 {
			t.Errorf("member %d asked for %d snapshots over %d writes, want about one per %d", i, asked, clients*each, count)
		}
		if first <= 1 {
			t.Errorf("member %d keeps its data shard's whole log (entries %d to %d)", i, first, last)
		}
	}
}

// A watch on a member that was cut off while the others wrote many
// snapshots' worth of entries gets every event once the member is back,
// once and in order, though the member catches up from a Raft snapshot,
// which brings the writes without applying them one by one.
func TestWatchThroughSnapshotCatchUp(t *testing.T) {
	c := Start(t, 3, WithSnapshotCount(50), WithFaults())
	ctx := ctxT(t, 2*time.Minute)
	// Cut off a member that leads no group, so that no write in flight
	// fails with "leader changed".
	cut, others := leaderless(c)
	w := c.Client(t, cut).Watch(ctx, "k", clientv3.WithPrefix())
	c.Cut(cut)
	cl := c.Client(t, others...)
	var want []int64
	for i := range 300 {
		resp, err := cl.Put(ctx, fmt.Sprintf("k%04d", i), fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, resp.Header.Revision)
	}
	c.Heal(cut)
	resp, err := cl.Put(ctx, "k-last", "")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, resp.Header.Revision)
	var got []int64
	for len(got) < len(want) {
		select {
		case wr := <-w:
			if err := wr.Err(); err != nil {
				t.Fatal(err)
			}
			for _, ev := range wr.Events {
				got = append(got, ev.Kv.ModRevision)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("the watch got %d of %d events", len(got), len(want))
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("the watch got revisions %v, want %v", got, want)
	}
}
