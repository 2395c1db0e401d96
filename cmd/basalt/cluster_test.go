package main

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// startCluster starts three members of a new cluster as separate
// processes, as etcd's static bootstrap does.
func startCluster(t *testing.T) []*process {
	t.Helper()
	return startClusterOf(t, 3)
}

// startClusterOf starts n members of a new cluster as separate processes,
// with flags besides their names and the initial cluster (which come last).
func startClusterOf(t *testing.T, n int, flags ...string) []*process {
	t.Helper()
	type addrs struct{ client, peer string }
	var (
		as      []addrs
		initial []string
		used    = make(map[string]bool)
	)
	distinct := func() string { // a port just freed may be handed out twice
		for {
			if a := freeAddr(t); !used[a] {
				used[a] = true
				return a
			}
		}
	}
	for i := range n {
		a := addrs{distinct(), distinct()}
		as = append(as, a)
		initial = append(initial, fmt.Sprintf("m%d=http://%s", i+1, a.peer))
	}
	var ps []*process
	for i, a := range as {
		ps = append(ps, launchProcess(t, t.TempDir(), a.client, a.peer, append(slices.Clone(flags),
			"--name", fmt.Sprintf("m%d", i+1), "--initial-cluster", strings.Join(initial, ","))...))
	}
	for _, p := range ps {
		p.waitHealthy()
	}
	return ps
}

// dataLeader returns the index of the process whose member leads, as
// Maintenance.Status reports it.
func dataLeader(t *testing.T, ps []*process) int {
	t.Helper()
	cli := newClient(t, ps[0].clientURL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := cli.Status(ctx, ps[0].clientURL)
	if err != nil {
		t.Fatal(err)
	}
	ml, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ml.Members {
		if m.ID != st.Leader {
			continue
		}
		for i, p := range ps {
			if slices.Contains(m.PeerURLs, p.peerURL) {
				return i
			}
		}
	}
	t.Fatalf("leader %x is not among the members %v", st.Leader, ml.Members)
	return -1
}

// TestKillLeaderUnderLoad kills the leader of a three-process cluster with
// SIGKILL while clients write through every member. Every acknowledged
// write is there afterwards at its revision, revisions strictly increase,
// a watcher on a surviving member saw each acknowledged write once, and the
// killed member catches up when it comes back.
func TestKillLeaderUnderLoad(t *testing.T) {
	ps := startCluster(t)
	leader := dataLeader(t, ps)
	var eps []string
	for _, p := range ps {
		eps = append(eps, p.clientURL)
	}
	watcherNode := ps[(leader+1)%3]
	wcli := newClient(t, watcherNode.clientURL)
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	watch := wcli.Watch(wctx, "w", clientv3.WithPrefix(), clientv3.WithRev(1))

	type ack struct {
		key string
		rev int64
	}
	var (
		mu    sync.Mutex
		acked []ack
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(context.Background())
	for w := range 8 {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{eps[w%3]}, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last int64
			for i := 0; ctx.Err() == nil; i++ {
				key := fmt.Sprintf("w%d/%06d", w, i)
				rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
				resp, err := cli.Put(rctx, key, key)
				rcancel()
				if err != nil {
					time.Sleep(20 * time.Millisecond)
					continue // unacknowledged: may or may not be stored
				}
				if resp.Header.Revision <= last {
					t.Errorf("writer %d: revision %d after %d", w, resp.Header.Revision, last)
				}
				last = resp.Header.Revision
				mu.Lock()
				acked = append(acked, ack{key, resp.Header.Revision})
				mu.Unlock()
			}
		}()
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	waitCount := func(n int) {
		deadline := time.Now().Add(60 * time.Second)
		for count() < n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitCount(500)
	ps[leader].kill()
	before := count()
	waitCount(before + 500) // the survivors take over
	cancel()
	wg.Wait()
	if after := count(); after < before+100 {
		t.Fatalf("%d writes acknowledged before the kill, only %d after", before, after-before)
	}

	cli := newClient(t, watcherNode.clientURL)
	revs := make(map[int64]string)
	for _, a := range acked {
		if other, dup := revs[a.rev]; dup {
			t.Fatalf("revision %d acknowledged for %s and %s", a.rev, other, a.key)
		}
		revs[a.rev] = a.key
		resp, err := cli.Get(context.Background(), a.key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || resp.Kvs[0].ModRevision != a.rev {
			t.Fatalf("acknowledged write %s at revision %d: after the kill %v", a.key, a.rev, resp.Kvs)
		}
	}
	// The watcher saw every acknowledged write, once, in revision order.
	seen := make(map[int64]int)
	var lastRev int64
	for len(seen) < len(revs) || !containsAll(seen, revs) {
		select {
		case wr := <-watch:
			if err := wr.Err(); err != nil {
				t.Fatalf("watch: %v", err)
			}
			for _, ev := range wr.Events {
				if ev.Kv.ModRevision <= lastRev {
					t.Fatalf("watch event at %d after %d", ev.Kv.ModRevision, lastRev)
				}
				lastRev = ev.Kv.ModRevision
				seen[ev.Kv.ModRevision]++
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("watcher saw %d events; %d writes acknowledged", len(seen), len(revs))
		}
	}

	// The killed member comes back and catches up.
	p := ps[leader]
	back := startProcess(t, p.dataDir, strings.TrimPrefix(p.clientURL, "http://"), strings.TrimPrefix(p.peerURL, "http://"), p.cmd.Args[len(p.cmd.Args)-4:]...)
	bcli := newClient(t, back.clientURL)
	want, err := cli.Get(context.Background(), "w", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := bcli.Get(context.Background(), "w", clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithSerializable())
		if err == nil && got.Count == want.Count {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted member has %v keys, want %d (%v)", got, want.Count, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d writes acknowledged (%d after the kill); all present and watched", len(acked), len(acked)-before)
}

// TestRestartedMemberCatchesUpFromSnapshot stops a member while the others
// take more writes than their Raft logs keep (a snapshot every 50 entries),
// so that when it comes back the leader can only send it a snapshot: the
// state machine's data in chunks over the Raft transport. It then serves
// every key with its value.
func TestRestartedMemberCatchesUpFromSnapshot(t *testing.T) {
	flags := []string{"--snapshot-count", "50"}
	ps := startClusterOf(t, 3, flags...)
	l := dataLeader(t, ps)
	leader, behind := ps[l], ps[(l+1)%3]
	behind.kill()

	cli := newClient(t, leader.clientURL)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// 400 writes of 16 KiB: over 6 MiB, several chunks.
	value := func(i int) string { return strings.Repeat(fmt.Sprintf("%05d", i), 16<<10/5) }
	const n = 400
	for i := range n {
		if _, err := cli.Put(ctx, fmt.Sprintf("s/%05d", i), value(i)); err != nil {
			t.Fatal(err)
		}
	}

	back := startProcess(t, behind.dataDir, strings.TrimPrefix(behind.clientURL, "http://"), strings.TrimPrefix(behind.peerURL, "http://"),
		append(slices.Clone(flags), behind.cmd.Args[len(behind.cmd.Args)-4:]...)...)
	bcli := newClient(t, back.clientURL)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := bcli.Get(ctx, "s/", clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithSerializable())
		if err == nil && got.Count == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted member has %v keys, want %d (%v)", got, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got, err := bcli.Get(ctx, "s/", clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		t.Fatal(err)
	}
	for i, kv := range got.Kvs {
		if string(kv.Value) != value(i) {
			t.Fatalf("key %s on the restarted member has a wrong value (%d bytes)", kv.Key, len(kv.Value))
		}
	}
}

func containsAll(seen map[int64]int, revs map[int64]string) bool {
	for r := range revs {
		if seen[r] == 0 {
			return false
		}
	}
	return true
}

// TestEtcdctlCluster runs etcdctl's cluster-wide commands against a
// three-process cluster.
func TestEtcdctlCluster(t *testing.T) {
	ps := startCluster(t)
	out, err := etcdctl(t, ps[1].clientURL, "", "member", "list", "-w", "simple")
	if err != nil || strings.Count(out, "started") != 3 {
		t.Fatalf("member list: %v\n%s", err, out)
	}
	for _, p := range ps {
		if !strings.Contains(out, p.clientURL) || !strings.Contains(out, p.peerURL) {
			t.Fatalf("member list lacks %s / %s:\n%s", p.clientURL, p.peerURL, out)
		}
	}
	out, err = etcdctl(t, ps[1].clientURL, "", "endpoint", "health", "--cluster")
	if err != nil || strings.Count(out, "is healthy") != 3 {
		t.Fatalf("endpoint health --cluster: %v\n%s", err, out)
	}
	out, err = etcdctl(t, ps[1].clientURL, "", "endpoint", "status", "--cluster", "-w", "simple")
	if err != nil || len(strings.Split(strings.TrimSpace(out), "\n")) != 3 || strings.Count(out, ", true, false,") != 1 {
		t.Fatalf("endpoint status --cluster (one leader, no learners): %v\n%s", err, out)
	}
	if out, err := etcdctl(t, ps[2].clientURL, "", "put", "k", "v"); err != nil {
		t.Fatalf("put through a member: %v\n%s", err, out)
	}
	if out, err := etcdctl(t, ps[0].clientURL, "", "get", "k", "--print-value-only"); err != nil || strings.TrimSpace(out) != "v" {
		t.Fatalf("get through another member: %v\n%s", err, out)
	}
	// move-leader to another member, asked of the leader (etcdctl finds it).
	leader := dataLeader(t, ps)
	target := (leader + 1) % 3
	cli := newClient(t, ps[target].clientURL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := cli.Status(ctx, ps[target].clientURL)
	if err != nil {
		t.Fatal(err)
	}
	var eps []string
	for _, p := range ps {
		eps = append(eps, p.clientURL)
	}
	if out, err := etcdctl(t, strings.Join(eps, ","), "", "move-leader", fmt.Sprintf("%x", st.Header.MemberId)); err != nil {
		t.Fatalf("move-leader: %v\n%s", err, out)
	}
	if got := dataLeader(t, ps); got != target {
		t.Fatalf("leader is member %d after move-leader to %d", got, target)
	}
	// Asking a follower to move the leadership fails as etcd's does.
	follower := (target + 1) % 3
	if out, err := etcdctl(t, ps[follower].clientURL, "", "move-leader", fmt.Sprintf("%x", st.Header.MemberId)); err == nil {
		t.Fatalf("move-leader through a follower succeeded:\n%s", out)
	}
}

// TestEtcdctlThroughGateway runs a four-process cluster: three members
// hold the data, the fourth is a gateway, and etcdctl works against it as
// against the others.
func TestEtcdctlThroughGateway(t *testing.T) {
	ps := startClusterOf(t, 4)
	out, err := etcdctl(t, ps[3].clientURL, "", "member", "list", "-w", "simple")
	if err != nil || strings.Count(out, "started") != 4 {
		t.Fatalf("member list: %v\n%s", err, out)
	}
	out, err = etcdctl(t, ps[3].clientURL, "", "endpoint", "health", "--cluster")
	if err != nil || strings.Count(out, "is healthy") != 4 {
		t.Fatalf("endpoint health --cluster: %v\n%s", err, out)
	}
	out, err = etcdctl(t, ps[3].clientURL, "", "endpoint", "status", "--cluster", "-w", "simple")
	if err != nil || len(strings.Split(strings.TrimSpace(out), "\n")) != 4 || strings.Count(out, ", true, false,") != 1 {
		t.Fatalf("endpoint status --cluster (one leader, no learners): %v\n%s", err, out)
	}
	// The gateway is the member the shard's replicas leave out.
	shards, err := basaltctl("shards", "--endpoint", strings.TrimPrefix(ps[0].clientURL, "http://"))
	if err != nil || strings.Count(shards, ",") != 2 {
		t.Fatalf("basaltctl shards (three replicas): %v\n%s", err, shards)
	}
	var gw []int
	for i, p := range ps {
		st, err := newClient(t, p.clientURL).Status(context.Background(), p.clientURL)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(shards, fmt.Sprintf("%x", st.Header.MemberId)) {
			gw = append(gw, i)
		}
	}
	if len(gw) != 1 {
		t.Fatalf("%d members are not replicas of the shard:\n%s", len(gw), shards)
	}
	g := ps[gw[0]].clientURL
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first, err := newClient(t, g).Put(ctx, "k", "v0")
	if err != nil {
		t.Fatalf("put through the gateway: %v", err)
	}
	w := startEtcdctl(t, g, "watch", "k", "--rev", fmt.Sprint(first.Header.Revision+1))
	if out, err := etcdctl(t, g, "", "put", "k", "v1"); err != nil {
		t.Fatalf("put through the gateway: %v\n%s", err, out)
	}
	w.waitOutput("PUT\nk\nv1\n")
	other := ps[(gw[0]+1)%4].clientURL
	if out, err := etcdctl(t, other, "", "get", "k", "--print-value-only"); err != nil || strings.TrimSpace(out) != "v1" {
		t.Fatalf("get through a replica: %v\n%s", err, out)
	}
	if out, err := etcdctl(t, other, "", "put", "k", "v2"); err != nil {
		t.Fatalf("put through a replica: %v\n%s", err, out)
	}
	w.waitOutput("k\nv1\nPUT\nk\nv2\n")
	if out, err := etcdctl(t, g, "", "get", "k", "--print-value-only"); err != nil || strings.TrimSpace(out) != "v2" {
		t.Fatalf("get through the gateway: %v\n%s", err, out)
	}
	// Bad input gets etcd's error through the gateway too.
	if out, err := etcdctl(t, g, "", "put", "", "v"); err == nil || !strings.Contains(out, "key is not provided") {
		t.Fatalf("empty key through the gateway: %v\n%s", err, out)
	}
}

// TestBadClusterFlags starts the binary with wrong cluster flags: it exits
// with etcd's complaint and serves nothing.
func TestBadClusterFlags(t *testing.T) {
	peer := "http://" + freeAddr(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--initial-cluster", "other=" + peer}, `couldn't find local name "e2e" in the initial cluster configuration`},
		{[]string{"--initial-cluster", "e2e=http://127.0.0.1:1"}, "but missing from --initial-advertise-peer-urls"},
		{[]string{"--initial-cluster", "e2e"}, "is not name=peer-url"},
		{[]string{"--initial-cluster-state", "maybe"}, "--initial-cluster-state must be new or existing"},
		{[]string{"--gossip-addr", "nowhere"}, "gossip address"},
		{[]string{"--shard-split-size", "-1"}, "--shard-split-size must not be negative"},
		{[]string{"--shard-split-size", "lots"}, "invalid value"},
	} {
		args := append([]string{"--name", "e2e", "--data-dir", t.TempDir(), "--listen-client-urls", "http://" + freeAddr(t),
			"--listen-peer-urls", peer, "--gossip-addr", freeAddr(t)}, c.args...)
		out, err := exec.Command(binary, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("basalt %v: %v\n%s\nwant an error with %q", c.args, err, out, c.want)
		}
	}
}
