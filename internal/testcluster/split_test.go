package testcluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/basaltdb/basalt/proto/basaltpb"
)

// internalClient returns the Internal service of node i (what basaltctl
// talks to).
func internalClient(t testing.TB, c *Cluster, i int) basaltpb.InternalClient {
	t.Helper()
	u, err := url.Parse(c.Nodes[i].ClientURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(u.Host, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return basaltpb.NewInternalClient(conn)
}

// split splits the shard holding key at key, asking node i (which forwards
// the request to the shard's leader).
func split(t testing.TB, c *Cluster, i int, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := internalClient(t, c, i).Split(ctx, &basaltpb.SplitRequest{Key: []byte(key)}); err != nil {
		t.Errorf("split at %q through node %d: %v", key, i, err)
	}
}

// shards lists the shards as node i knows them.
func shards(t testing.TB, c *Cluster, i int) []*basaltpb.ShardInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := internalClient(t, c, i).Shards(ctx, &basaltpb.ShardsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Shards
}

// Shards split while clients write, read and watch through every node:
// no request fails, every acknowledged write is read back and watched once,
// in revision order, on every node, and revisions stay dense (a split
// takes none). Longer Raft timings than the harness's: a leader change
// fails requests, and it is not what this test is about.
func TestSplitsUnderLoad(t *testing.T) {
	c := Start(t, 3, WithRaftTimings(50*time.Millisecond, 500*time.Millisecond))
	ctx := ctxT(t, 2*time.Minute)
	cl := c.Client(t)
	first, err := cl.Put(ctx, "start", "")
	if err != nil {
		t.Fatal(err)
	}
	from := first.Header.Revision + 1
	watches := make([]clientv3.WatchChan, len(c.Nodes))
	for i := range c.Nodes {
		watches[i] = c.Client(t, i).Watch(ctx, "k", clientv3.WithPrefix(), clientv3.WithRev(from))
	}

	type write struct {
		key string
		rev int64
	}
	var (
		mu     sync.Mutex
		acked  []write
		wg     sync.WaitGroup
		failed = make(chan error, 16)
	)
	var done atomic.Bool // writers finish their request, then stop
	for w := range 6 {
		wcl := c.Client(t, w%len(c.Nodes))
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 7))
			for !done.Load() {
				key := fmt.Sprintf("k%04d", rnd.IntN(10000))
				resp, err := wcl.Put(ctx, key, key)
				if err == nil {
					// Read it back, linearizably.
					var got *clientv3.GetResponse
					if got, err = wcl.Get(ctx, key); err == nil && (len(got.Kvs) != 1 || got.Kvs[0].ModRevision < resp.Header.Revision) {
						err = fmt.Errorf("get %s after its put at %d: %v", key, resp.Header.Revision, got.Kvs)
					}
				}
				if err != nil {
					failed <- err
					return
				}
				mu.Lock()
				acked = append(acked, write{key, resp.Header.Revision})
				mu.Unlock()
			}
		}()
	}
	for i, at := range []string{"k5000", "k2500", "k7500", "k1250", "k8750", "k6000"} {
		time.Sleep(400 * time.Millisecond)
		split(t, c, i%len(c.Nodes), at)
	}
	time.Sleep(500 * time.Millisecond)
	done.Store(true)
	wg.Wait()
	close(failed)
	for err := range failed {
		t.Errorf("a client request failed during the splits: %v", err)
	}
	if t.Failed() {
		t.FailNow()
	}

	slices.SortFunc(acked, func(a, b write) int { return int(a.rev - b.rev) })
	if len(acked) < 100 {
		t.Fatalf("only %d writes acknowledged", len(acked))
	}
	for i := range acked {
		if acked[i].rev != from+int64(i) {
			t.Fatalf("write %d has revision %d, want %d: revisions are not dense", i, acked[i].rev, from+int64(i))
		}
	}
	last := acked[len(acked)-1].rev
	for i, wch := range watches {
		next := 0
		for next < len(acked) {
			var resp clientv3.WatchResponse
			select {
			case resp = <-wch:
			case <-time.After(10 * time.Second):
				t.Fatalf("node %d: watch stalled after %d of %d writes", i, next, len(acked))
			}
			if err := resp.Err(); err != nil {
				t.Fatalf("node %d: watch: %v", i, err)
			}
			for _, ev := range resp.Events {
				want := acked[next]
				if ev.Type != mvccpb.PUT || string(ev.Kv.Key) != want.key || ev.Kv.ModRevision != want.rev {
					t.Fatalf("node %d: event %d is %s %s@%d, want PUT %s@%d", i, next, ev.Type, ev.Kv.Key, ev.Kv.ModRevision, want.key, want.rev)
				}
				next++
			}
		}
	}

	got := shards(t, c, 1)
	if len(got) != 7 {
		t.Fatalf("%d shards after 6 splits, want 7", len(got))
	}
	var keys int64
	for _, s := range got {
		keys += s.Keys
		if len(s.Descriptor_.Replicas) != 3 {
			t.Errorf("shard %d has replicas %v, want all three members", s.Descriptor_.ShardId, s.Descriptor_.Replicas)
		}
	}
	all, err := cl.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithCountOnly(), clientv3.WithRev(last))
	if err != nil {
		t.Fatal(err)
	}
	if keys != all.Count {
		t.Fatalf("the shards hold %d keys, a range over all of them counts %d", keys, all.Count)
	}

	// The shards' leaders are spread over the members (each new group
	// elects its own): compaction and a lease's revocation reach every
	// shard from any node.
	leaders := map[uint64]bool{}
	for _, s := range got {
		leaders[s.Leader] = true
	}
	t.Logf("%d shards led by %d members", len(got), len(leaders))
	for i := range c.Nodes {
		cli := c.Client(t, i)
		if _, err := cli.Compact(ctx, last-int64(len(c.Nodes))+int64(i), clientv3.WithCompactPhysical()); err != nil {
			t.Fatalf("compact through node %d: %v", i, err)
		}
	}
	// Each shard compacted: a read below the compaction fails in every one.
	for _, s := range got {
		key := string(s.Descriptor_.Start)
		if key == "" {
			key = "k"
		}
		if _, err := cl.Get(ctx, key, clientv3.WithRev(last-int64(len(c.Nodes)))); !errors.Is(err, rpctypes.ErrCompacted) {
			t.Fatalf("shard %d: a read of %q below the compaction: %v, want %v", s.Descriptor_.ShardId, key, err, rpctypes.ErrCompacted)
		}
	}
	lease, err := cl.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"k0001", "k3000", "k9999"} { // three shards
		if _, err := cl.Put(ctx, k, "leased", clientv3.WithLease(lease.ID)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Client(t, 2).Revoke(ctx, lease.ID); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	for _, k := range []string{"k0001", "k3000", "k9999"} {
		if resp, err := cl.Get(ctx, k); err != nil || len(resp.Kvs) != 0 {
			t.Fatalf("%s after its lease was revoked: %v %v", k, resp, err)
		}
	}
}

// A client pages through 100,000 keys at one revision while writers update
// and delete keys and the shards split: the pages together are exactly the
// keys and values at that revision.
func TestPaginationAcrossSplits(t *testing.T) {
	const keys = 100_000
	c := Start(t, 1)
	ctx := ctxT(t, 3*time.Minute)
	cl := c.Client(t)
	key := func(i int) string { return fmt.Sprintf("p%06d", i) }
	for i := 0; i < keys; i += 128 {
		var ops []clientv3.Op
		for j := i; j < min(i+128, keys); j++ {
			ops = append(ops, clientv3.OpPut(key(j), key(j)))
		}
		if _, err := cl.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	at, err := cl.Get(ctx, "p", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	rev := at.Header.Revision

	var done atomic.Bool
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // writers: updates and deletes of the paged keys
		defer wg.Done()
		rnd := rand.New(rand.NewPCG(1, 2))
		for !done.Load() {
			k := key(rnd.IntN(keys))
			var err error
			if rnd.IntN(3) == 0 {
				_, err = cl.Delete(ctx, k)
			} else {
				_, err = cl.Put(ctx, k, "changed")
			}
			if err != nil {
				t.Errorf("write during paging: %v", err)
				return
			}
		}
	}()
	go func() { // splits, spread over the key space
		defer wg.Done()
		for i := 1; i < 8 && !done.Load(); i++ {
			split(t, c, 0, key(i*keys/8))
			time.Sleep(100 * time.Millisecond)
		}
	}()

	var got []*mvccpb.KeyValue
	from := "p"
	for {
		resp, err := cl.Get(ctx, from, clientv3.WithRange(clientv3.GetPrefixRangeEnd("p")), clientv3.WithRev(rev), clientv3.WithLimit(997))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Revision < rev {
			t.Fatalf("page header revision %d is below the paging revision %d", resp.Header.Revision, rev)
		}
		got = append(got, resp.Kvs...)
		if !resp.More {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		time.Sleep(2 * time.Millisecond) // let writes and splits interleave
	}
	done.Store(true)
	wg.Wait()
	if len(got) != keys {
		t.Fatalf("pages hold %d keys, want %d", len(got), keys)
	}
	for i, kv := range got {
		if string(kv.Key) != key(i) || string(kv.Value) != key(i) || kv.ModRevision > rev {
			t.Fatalf("page entry %d is %s=%s@%d, want %s=%s at or below %d", i, kv.Key, kv.Value, kv.ModRevision, key(i), key(i), rev)
		}
	}
	if n := len(shards(t, c, 0)); n < 4 {
		t.Fatalf("only %d shards: the splits did not happen during the paging", n)
	}
}

// A shard that grows past --shard-split-size splits by itself, at a key
// that halves it, and every key reads back unchanged from its new shard.
func TestShardSplitsBySize(t *testing.T) {
	// About 2 MiB of values, four times the split size.
	const splitSize = 512 << 10
	c := Start(t, 1, WithShardSplitSize(splitSize, 100*time.Millisecond))
	ctx := ctxT(t, 2*time.Minute)
	cl := c.Client(t)
	// A random value per key: Pebble compresses what it stores.
	const keys = 4000
	values := make([]string, keys)
	for j := range values {
		v := make([]byte, 500)
		for i := range v {
			v[i] = byte(rand.IntN(256))
		}
		values[j] = string(v)
	}
	for i := 0; i < keys; i += 100 {
		var ops []clientv3.Op
		for j := i; j < i+100; j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("s%05d", j), values[j]))
		}
		if _, err := cl.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	// Splits go on until every shard is within the size; a shard split a
	// moment ago may not list its keys yet.
	var got []*basaltpb.ShardInfo
	waitFor(t, "the shards split by size", func() bool {
		got = shards(t, c, 0)
		var total int64
		for _, s := range got {
			total += s.Keys
			if s.Size > splitSize {
				return false
			}
		}
		return len(got) >= 2 && total == keys
	})
	for i := 1; i < len(got); i++ {
		if string(got[i-1].Descriptor_.End) != string(got[i].Descriptor_.Start) {
			t.Fatalf("shard %d ends at %q, the next starts at %q", i-1, got[i-1].Descriptor_.End, got[i].Descriptor_.Start)
		}
	}
	resp, err := cl.Get(ctx, "s", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != keys {
		t.Fatalf("read %d keys back, want %d", len(resp.Kvs), keys)
	}
	for j, kv := range resp.Kvs {
		if want := values[j]; string(kv.Key) != fmt.Sprintf("s%05d", j) || string(kv.Value) != want {
			t.Fatalf("key %d reads %s=%.10q..., want s%05d=%.10q...", j, kv.Key, kv.Value, j, want)
		}
	}
}

// Shards created by splits come back after their members restart, with
// their keys, and keep splitting and serving.
func TestSplitShardsSurviveRestart(t *testing.T) {
	c := Start(t, 3)
	ctx := ctxT(t, 2*time.Minute)
	cl := c.Client(t)
	for i := range 100 {
		if _, err := cl.Put(ctx, fmt.Sprintf("k%03d", i), "before"); err != nil {
			t.Fatal(err)
		}
	}
	split(t, c, 0, "k050")
	split(t, c, 1, "k025")
	for i := range 100 {
		if _, err := cl.Put(ctx, fmt.Sprintf("k%03d", i), "after"); err != nil {
			t.Fatal(err)
		}
	}
	for i := range c.Nodes {
		c.Stop(i)
		c.Restart(i)
	}
	c.StopAll()
	c.Restart(0, 1, 2)
	cl = c.Client(t)
	resp, err := cl.Get(ctx, "k", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 100 {
		t.Fatalf("%d keys after the restarts, want 100", len(resp.Kvs))
	}
	for _, kv := range resp.Kvs {
		if string(kv.Value) != "after" {
			t.Fatalf("%s=%s after the restarts, want after", kv.Key, kv.Value)
		}
	}
	if got := shards(t, c, 2); len(got) != 3 {
		t.Fatalf("%d shards after the restarts, want 3", len(got))
	}
	split(t, c, 2, "k075")
	if _, err := cl.Put(ctx, "k080", "later"); err != nil {
		t.Fatal(err)
	}
	if got := shards(t, c, 0); len(got) != 4 {
		t.Fatalf("%d shards after another split, want 4", len(got))
	}
}

// A learner holds non-voting replicas of every shard, those that splits
// create included: it serves reads and watches of keys in every shard, and
// it can be promoted in all of them.
func TestSplitReachesLearners(t *testing.T) {
	c := Start(t, 3)
	ctx := ctxT(t, 2*time.Minute)
	learner := c.Add(true)
	cl := c.Client(t, 0, 1, 2)
	w := c.Client(t, learner).Watch(ctx, "k", clientv3.WithPrefix())
	split(t, c, 0, "k5")
	resp, err := cl.Put(ctx, "k7", "right")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Put(ctx, "k2", "left"); err != nil {
		t.Fatal(err)
	}
	lc := c.Client(t, learner)
	waitFor(t, "the learner has the new shard's key", func() bool {
		got, err := lc.Get(ctx, "k7", clientv3.WithSerializable())
		return err == nil && len(got.Kvs) == 1 && got.Kvs[0].ModRevision == resp.Header.Revision
	})
	var seen []string
	for len(seen) < 2 {
		select {
		case wr := <-w:
			for _, ev := range wr.Events {
				seen = append(seen, string(ev.Kv.Key))
			}
		case <-time.After(10 * time.Second):
			var state []string
			for _, sh := range shards(t, c, learner) {
				state = append(state, fmt.Sprintf("shard %d [%q, %q) revision %d", sh.Descriptor_.ShardId, sh.Descriptor_.Start, sh.Descriptor_.End, sh.Revision))
			}
			t.Fatalf("the learner's watch saw %v, want k7 and k2 (its shards: %v)", seen, state)
		}
	}
	if seen[0] != "k7" || seen[1] != "k2" {
		t.Fatalf("the learner's watch saw %v, want [k7 k2]", seen)
	}
	got := shards(t, c, learner)
	if len(got) != 2 {
		t.Fatalf("the learner lists %d shards, want 2", len(got))
	}
	for _, s := range got {
		if _, ok := s.Descriptor_.Replicas[c.Nodes[learner].ID]; !ok {
			t.Errorf("shard %d does not list the learner among its replicas", s.Descriptor_.ShardId)
		}
	}
	// Promotion reaches the new shard's group too.
	if _, err := cl.MemberPromote(ctx, c.Nodes[learner].ID); err != nil {
		t.Fatalf("promote the learner: %v", err)
	}
	if _, err := lc.Put(ctx, "k9", "after-promote"); err != nil {
		t.Fatalf("put through the promoted member: %v", err)
	}
}
