package testcluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/basaltdb/basalt/proto/basaltpb"
)

// internalClient returns the Internal service of node i (what basaltctl
// talks to).
func internalClient(t *testing.T, c *Cluster, i int) basaltpb.InternalClient {
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
func split(t *testing.T, c *Cluster, i int, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := internalClient(t, c, i).Split(ctx, &basaltpb.SplitRequest{Key: []byte(key)}); err != nil {
		t.Errorf("split at %q through node %d: %v", key, i, err)
	}
}

// shards lists the shards as node i knows them.
func shards(t *testing.T, c *Cluster, i int) []*basaltpb.ShardInfo {
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
// takes none).
func TestSplitsUnderLoad(t *testing.T) {
	c := Start(t, 3)
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
}
