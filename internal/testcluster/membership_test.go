package testcluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A member added through the Cluster API joins as a learner, catches up,
// is promoted, and serves; a removed member is gone from every list; bad
// requests get etcd's errors.
func TestMembershipChanges(t *testing.T) {
	c := Start(t, 3)
	ctx := ctxT(t, 2*time.Minute)
	cl := c.Client(t)
	for i := range 20 {
		if _, err := cl.Put(ctx, fmt.Sprintf("k%02d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	added := c.Add(true)
	nc := c.Client(t, added)
	waitFor(t, "the learner catches up", func() bool {
		resp, err := nc.Get(ctx, "k", clientv3.WithPrefix(), clientv3.WithSerializable())
		return err == nil && len(resp.Kvs) == 20
	})
	id := c.Nodes[added].ID
	member := func() (*clientv3.MemberListResponse, int) {
		t.Helper()
		ml, err := cl.MemberList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range ml.Members {
			if m.ID == id {
				return ml, i
			}
		}
		return ml, -1
	}
	ml, i := member()
	if i < 0 || !ml.Members[i].IsLearner || ml.Members[i].Name != "node4" || len(ml.Members[i].ClientURLs) != 1 {
		t.Fatalf("added learner in the member list: %v", ml.Members)
	}
	if st, err := nc.Status(ctx, c.Nodes[added].ClientURL); err != nil || !st.IsLearner {
		t.Fatalf("status of the learner: %v %v", err, st)
	}
	// A learner serves through forwarding, as every member does.
	if _, err := nc.Put(ctx, "through-learner", "v"); err != nil {
		t.Fatalf("put through the learner: %v", err)
	}

	if _, err := cl.MemberPromote(ctx, id); err != nil {
		t.Fatalf("promote: %v", err)
	}
	if ml, i := member(); ml.Members[i].IsLearner {
		t.Fatalf("promoted member still a learner: %v", ml.Members[i])
	}
	if _, err := cl.MemberPromote(ctx, id); !errors.Is(err, rpctypes.ErrMemberNotLearner) {
		t.Fatalf("promoting a voter: %v, want %v", err, rpctypes.ErrMemberNotLearner)
	}
	if _, err := cl.MemberAdd(ctx, []string{c.Nodes[0].cfg.ListenPeerURL}); !errors.Is(err, rpctypes.ErrPeerURLExist) {
		t.Fatalf("adding a taken peer URL: %v, want %v", err, rpctypes.ErrPeerURLExist)
	}
	// clientv3 checks URLs itself; the raw gRPC call reaches the server.
	raw := pb.NewClusterClient(cl.ActiveConnection())
	if _, err := raw.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{"ftp://nowhere"}}); !errors.Is(err, rpctypes.ErrGRPCMemberBadURLs) {
		t.Fatalf("adding a bad peer URL: %v, want %v", err, rpctypes.ErrMemberBadURLs)
	}
	if _, err := cl.MemberRemove(ctx, 12345); !errors.Is(err, rpctypes.ErrMemberNotFound) {
		t.Fatalf("removing an unknown member: %v, want %v", err, rpctypes.ErrMemberNotFound)
	}
	if _, err := cl.MemberUpdate(ctx, id, []string{"http://127.0.0.1:1"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("moving a member's Raft address: %v", err)
	}

	// Four voters: one can stop, and then be removed.
	c.Stop(0)
	rest := c.Client(t, 1, 2, added)
	if _, err := rest.Put(ctx, "after-stop", "v"); err != nil {
		t.Fatalf("put with one of four members down: %v", err)
	}
	if _, err := rest.MemberRemove(ctx, c.Nodes[0].ID); err != nil {
		t.Fatalf("remove: %v", err)
	}
	ml, err := rest.MemberList(ctx)
	if err != nil || len(ml.Members) != 3 {
		t.Fatalf("member list after remove: %v %v", err, ml)
	}
	for _, i := range []int{1, 2, added} {
		resp, err := c.Client(t, i).Get(ctx, "after-stop")
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("node %d after remove: %v %v", i, err, resp)
		}
	}

	// A voting member added directly starts and votes.
	voter := c.Add(false)
	vc := c.Client(t, voter)
	if st, err := vc.Status(ctx, c.Nodes[voter].ClientURL); err != nil || st.IsLearner {
		t.Fatalf("status of the added voter: %v %v", err, st)
	}
	if _, err := vc.Put(ctx, "through-voter", "v"); err != nil {
		t.Fatalf("put through the added voter: %v", err)
	}
	ml, err = vc.MemberList(ctx)
	if err != nil || len(ml.Members) != 4 {
		t.Fatalf("member list with the voter: %v %v", err, ml)
	}
}

// A node started with --join naming one member's gossip address is added
// and serves; restarted, it stays the same member.
func TestJoinThroughGossip(t *testing.T) {
	c := Start(t, 3)
	ctx := ctxT(t, time.Minute)
	if _, err := c.Client(t).Put(ctx, "before", "v"); err != nil {
		t.Fatal(err)
	}
	j := c.Join(1)
	jc := c.Client(t, j)
	if resp, err := jc.Get(ctx, "before"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("read through the joined node: %v %v", err, resp)
	}
	if _, err := jc.Put(ctx, "after", "v"); err != nil {
		t.Fatalf("put through the joined node: %v", err)
	}
	ml, err := jc.MemberList(ctx)
	if err != nil || len(ml.Members) != 4 {
		t.Fatalf("member list: %v %v", err, ml)
	}
	for _, m := range ml.Members {
		if m.ID == c.Nodes[j].ID && (m.Name != "node4" || m.IsLearner || len(m.ClientURLs) != 1) {
			t.Fatalf("joined member: %v", m)
		}
	}
	id := c.Nodes[j].ID
	c.Stop(j)
	c.Restart(j)
	if c.Nodes[j].ID != id {
		t.Fatalf("restarted joined node has id %x, was %x", c.Nodes[j].ID, id)
	}
	if ml, err := c.Client(t, j).MemberList(ctx); err != nil || len(ml.Members) != 4 {
		t.Fatalf("member list after restart: %v %v", err, ml)
	}
}

// A learner that was never promoted restarts as a learner: it catches up
// with what was written while it was down, serves, and is still a learner
// (its replicas restart as non-voting ones).
func TestLearnerRestartsAsLearner(t *testing.T) {
	c := Start(t, 3)
	ctx := ctxT(t, time.Minute)
	learner := c.Add(true)
	cl := c.Client(t, 0, 1, 2)
	c.Stop(learner)
	resp, err := cl.Put(ctx, "while-down", "v")
	if err != nil {
		t.Fatal(err)
	}
	c.Restart(learner)
	lc := c.Client(t, learner)
	waitFor(t, "the restarted learner catches up", func() bool {
		got, err := lc.Get(ctx, "while-down", clientv3.WithSerializable())
		return err == nil && len(got.Kvs) == 1 && got.Kvs[0].ModRevision == resp.Header.Revision
	})
	st, err := lc.Status(ctx, c.Nodes[learner].ClientURL)
	if err != nil || !st.IsLearner {
		t.Fatalf("status of the restarted learner: %v %v", st, err)
	}
	// Still not a voter: with two of the three voters down, nothing
	// commits, even though the learner is up.
	c.Stop(0)
	c.Stop(1)
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := c.Client(t, 2, learner).Put(sctx, "no-quorum", "v"); err == nil {
		t.Fatal("a put committed with one voter of three up: the learner voted")
	}
}

// A voting member added to a cluster of three is a gateway: the data stays
// on three replicas, and the gateway relays every request to them. When a
// member that holds the data is removed, the gateway takes its place, and
// the cluster then survives losing another of the original members.
func TestGatewayReplacesRemovedMember(t *testing.T) {
	c := Start(t, 3)
	ctx := ctxT(t, 2*time.Minute)
	if _, err := c.Client(t).Put(ctx, "before", "v"); err != nil {
		t.Fatal(err)
	}
	gw := c.Add(false)
	gwID := c.Nodes[gw].ID
	for _, sh := range shards(t, c, 0) {
		if _, ok := sh.Descriptor_.Replicas[gwID]; ok || len(sh.Descriptor_.Replicas) != 3 {
			t.Fatalf("shard %d has replicas %v with a gateway in the cluster, want the 3 first members", sh.Descriptor_.ShardId, sh.Descriptor_.Replicas)
		}
	}
	if n := c.Nodes[gw].DataReplicas(); n != 0 {
		t.Fatalf("the gateway holds %d data replicas", n)
	}

	// Everything works through the gateway.
	gc := c.Client(t, gw)
	w := gc.Watch(ctx, "w", clientv3.WithPrefix())
	if resp, err := gc.Get(ctx, "before"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get through the gateway: %v %v", err, resp)
	}
	// putWatched puts key through cl; the watch must get that put alone.
	putWatched := func(cl *clientv3.Client, key string) {
		t.Helper()
		put, err := cl.Put(ctx, key, "")
		if err != nil {
			t.Fatal(err)
		}
		select {
		case wr := <-w:
			if len(wr.Events) != 1 || string(wr.Events[0].Kv.Key) != key || wr.Events[0].Kv.ModRevision != put.Header.Revision {
				t.Fatalf("watch through the gateway got %v, want %s alone", wr.Events, key)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("the watch through the gateway did not get %s", key)
		}
	}
	putWatched(c.Client(t, 0), "w1")
	txn, err := gc.Txn(ctx).If(clientv3.Compare(clientv3.Value("before"), "=", "v")).Then(clientv3.OpPut("txn", "t")).Commit()
	if err != nil || !txn.Succeeded {
		t.Fatalf("txn through the gateway: %v %v", err, txn)
	}
	lease, err := gc.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gc.KeepAliveOnce(ctx, lease.ID); err != nil {
		t.Fatalf("keep-alive through the gateway: %v", err)
	}
	if _, err := gc.Put(ctx, "leased", "v", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	if ml, err := gc.MemberList(ctx); err != nil || len(ml.Members) != 4 {
		t.Fatalf("member list through the gateway: %v %v", err, ml)
	}
	if st, err := gc.Status(ctx, c.Nodes[gw].ClientURL); err != nil || st.IsLearner || st.Leader == 0 || st.RaftIndex == 0 || st.RaftAppliedIndex == 0 || st.RaftAppliedIndex > st.RaftIndex {
		t.Fatalf("status of the gateway: %v %v", err, st)
	}
	// Bad input gets the upstream's error.
	if _, err := gc.Put(ctx, "", "v"); err == nil || err.Error() != "etcdserver: key is not provided" {
		t.Fatalf("empty key through the gateway: %v", err)
	}

	// Remove a member that holds the data (one that leads no group).
	victim, left := leaderless(c)
	if _, err := c.Client(t, left...).MemberRemove(ctx, c.Nodes[victim].ID); err != nil {
		t.Fatalf("remove a member: %v", err)
	}
	c.Stop(victim)
	waitFor(t, "the gateway holds the data", func() bool {
		for _, sh := range shards(t, c, left[0]) {
			if _, ok := sh.Descriptor_.Replicas[gwID]; !ok {
				return false
			}
		}
		return c.Nodes[gw].DataReplicas() == len(shards(t, c, left[0]))
	})
	waitFor(t, "the gateway has every write", func() bool {
		resp, err := gc.Get(ctx, "leased", clientv3.WithSerializable())
		return err == nil && len(resp.Kvs) == 1
	})

	// With the gateway a voter, two of the three replicas are a quorum.
	c.Stop(left[0])
	survivors := c.Client(t, left[1], gw)
	waitFor(t, "a write after losing another original member", func() bool {
		_, err := survivors.Put(ctx, "after", "v")
		return err == nil
	})
	for _, k := range []string{"before", "w1", "txn", "leased", "after"} {
		if resp, err := survivors.Get(ctx, k); err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("get %s after the replacement: %v %v", k, err, resp)
		}
	}
	// The watch opened through the gateway (relayed, perhaps to a member
	// stopped since: clientv3 then opened it again) gets the next event
	// once.
	putWatched(survivors, "w2")
}

// A new cluster of four members puts the data on three of them (those with
// the lowest ids); the fourth is a gateway from the start, and every member
// serves.
func TestNewClusterBeyondReplicationFactor(t *testing.T) {
	c := Start(t, 4)
	ctx := ctxT(t, time.Minute)
	descs := shards(t, c, 0)
	replicas := descs[0].Descriptor_.Replicas
	if len(replicas) != 3 {
		t.Fatalf("the data shard has replicas %v, want 3", replicas)
	}
	var ids []uint64
	for _, n := range c.Nodes {
		ids = append(ids, n.ID)
	}
	slices.Sort(ids)
	for i, n := range c.Nodes {
		_, holds := replicas[n.ID]
		if want := n.ID != ids[3]; holds != want {
			t.Fatalf("node %d (id %x) holds the data: %v, want %v (ids %x)", i, n.ID, holds, want, ids)
		}
		if got := n.DataReplicas(); (got == 1) != holds {
			t.Fatalf("node %d holds %d data replicas", i, got)
		}
		cl := c.Client(t, i)
		key := fmt.Sprintf("through-%d", i)
		if _, err := cl.Put(ctx, key, "v"); err != nil {
			t.Fatalf("put through node %d: %v", i, err)
		}
		if resp, err := cl.Get(ctx, key); err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("get through node %d: %v %v", i, err, resp)
		}
		if ml, err := cl.MemberList(ctx); err != nil || len(ml.Members) != 4 {
			t.Fatalf("member list through node %d: %v %v", i, err, ml)
		}
	}
	// A gateway restarts as a gateway and serves again.
	gw := slices.IndexFunc(c.Nodes, func(n *Node) bool { return n.ID == ids[3] })
	c.Stop(gw)
	c.Restart(gw)
	if n := c.Nodes[gw].DataReplicas(); n != 0 {
		t.Fatalf("the restarted gateway holds %d data replicas", n)
	}
	if resp, err := c.Client(t, gw).Get(ctx, "through-0"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get through the restarted gateway: %v %v", err, resp)
	}
	// Removing the gateway leaves the data where it is.
	replica := (gw + 1) % 4
	cl := c.Client(t, replica)
	if _, err := cl.MemberRemove(ctx, ids[3]); err != nil {
		t.Fatalf("remove the gateway: %v", err)
	}
	c.Stop(gw)
	if ml, err := cl.MemberList(ctx); err != nil || len(ml.Members) != 3 {
		t.Fatalf("member list without the gateway: %v %v", err, ml)
	}
	if got := shards(t, c, replica)[0].Descriptor_.Replicas; !maps.Equal(got, replicas) {
		t.Fatalf("the data shard's replicas went from %v to %v", replicas, got)
	}
	if _, err := cl.Put(ctx, "after-gateway", "v"); err != nil {
		t.Fatalf("put after removing the gateway: %v", err)
	}
}
