package watchfanout_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/basaltdb/basalt/internal/testnode"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"))
}

// history is what the store did, read back through Range at each revision
// from the writes' own responses: revision → the keys a write changed.
type write struct {
	rev  int64
	puts map[string]string // key → value
	dels []string
}

// checker verifies a watch's responses against the writes: ordered,
// unique, reliable (no gap), atomic (a revision's events in one response),
// prev_kv equal to the previous value, and bookmarks (a progress report at
// R follows every event at or below R).
type checker struct {
	t        *testing.T
	prefix   string
	lastRev  int64 // last revision seen in events
	bookmark int64 // last progress report
	events   map[int64][]*clientv3.Event
}

func (c *checker) add(resp clientv3.WatchResponse) {
	c.t.Helper()
	if err := resp.Err(); err != nil {
		c.t.Fatalf("watch error: %v", err)
	}
	if resp.IsProgressNotify() {
		if resp.Header.Revision < c.lastRev {
			c.t.Fatalf("progress at %d after an event at %d", resp.Header.Revision, c.lastRev)
		}
		c.bookmark = max(c.bookmark, resp.Header.Revision)
		return
	}
	var rev int64
	for i, ev := range resp.Events {
		if i == 0 {
			rev = ev.Kv.ModRevision
			if rev <= c.lastRev {
				c.t.Fatalf("event at %d after one at %d: not ordered or repeated", rev, c.lastRev)
			}
			if rev <= c.bookmark {
				c.t.Fatalf("event at %d after a progress report at %d: the bookmark lied", rev, c.bookmark)
			}
			if _, seen := c.events[rev]; seen {
				c.t.Fatalf("revision %d delivered twice", rev)
			}
		}
		c.events[ev.Kv.ModRevision] = append(c.events[ev.Kv.ModRevision], ev)
		if ev.Kv.ModRevision < rev {
			c.t.Fatalf("response not in revision order")
		}
		rev = ev.Kv.ModRevision
	}
	c.lastRev = rev
}

// verify compares the events with the writes under the checker's prefix.
func (c *checker) verify(writes []write, values map[int64]map[string]string) {
	c.t.Helper()
	for _, w := range writes {
		var want int
		for k := range w.puts {
			if len(k) >= len(c.prefix) && k[:len(c.prefix)] == c.prefix {
				want++
			}
		}
		for _, k := range w.dels {
			if len(k) >= len(c.prefix) && k[:len(c.prefix)] == c.prefix {
				want++
			}
		}
		got := c.events[w.rev]
		if len(got) != want {
			c.t.Fatalf("revision %d: %d events, want %d (reliable, atomic)", w.rev, len(got), want)
		}
		for _, ev := range got {
			k := string(ev.Kv.Key)
			prev, had := values[w.rev-1][k]
			switch {
			case ev.Type == mvccpb.PUT && string(ev.Kv.Value) != w.puts[k]:
				c.t.Fatalf("revision %d: %s=%q, want %q", w.rev, k, ev.Kv.Value, w.puts[k])
			case had && (ev.PrevKv == nil || string(ev.PrevKv.Value) != prev):
				c.t.Fatalf("revision %d: %s prev_kv %v, want %q", w.rev, k, ev.PrevKv, prev)
			case !had && ev.PrevKv != nil:
				c.t.Fatalf("revision %d: %s has prev_kv %q but did not exist", w.rev, k, ev.PrevKv.Value)
			}
		}
	}
}

// TestWatchGuarantees runs concurrent writers (puts, deletes, multi-key
// transactions) against watchers of prefixes with prev_kv; one watcher is
// cut off in the middle and resumes from its last revision + 1. Every
// watcher must see exactly the writes of its prefix, each revision once,
// in order, in one response, with the right previous values; progress
// reports never claim a revision before events it had not sent.
func TestWatchGuarantees(t *testing.T) {
	n := testnode.Start(t, testnode.WithProgressNotifyInterval(100*time.Millisecond))
	cli := n.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	start, err := cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	from := start.Header.Revision + 1
	prefixes := []string{"p/", "p/a", "q/"}
	checkers := make([]*checker, len(prefixes))
	var wg sync.WaitGroup
	stopWatch := make(chan struct{})
	for i, p := range prefixes {
		checkers[i] = &checker{t: t, prefix: p, events: map[int64][]*clientv3.Event{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := checkers[i]
			resume := i == 0 // this one is cut off and resumes
			wctx, wcancel := context.WithCancel(ctx)
			wch := cli.Watch(wctx, p, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithPrevKV(), clientv3.WithProgressNotify())
			for {
				select {
				case resp, ok := <-wch:
					if !ok {
						wcancel()
						return
					}
					c.add(resp)
					if resume && c.lastRev > from+20 {
						resume = false
						wcancel()
						wctx, wcancel = context.WithCancel(ctx)
						wch = cli.Watch(wctx, p, clientv3.WithPrefix(), clientv3.WithRev(c.lastRev+1), clientv3.WithPrevKV(), clientv3.WithProgressNotify())
					}
				case <-stopWatch:
					wcancel()
					return
				}
			}
		}()
	}

	var mu sync.Mutex
	var writes []write
	keys := []string{"p/a1", "p/a2", "p/b", "q/1", "q/2", "r"}
	var wwg sync.WaitGroup
	for wr := range 4 {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			r := rand.New(rand.NewPCG(uint64(wr), 1))
			for i := range 60 {
				k1, k2 := keys[r.IntN(len(keys))], keys[r.IntN(len(keys))]
				v := fmt.Sprintf("w%d-%d", wr, i)
				var w write
				switch r.IntN(3) {
				case 0:
					resp, err := cli.Put(ctx, k1, v)
					if err != nil {
						t.Error(err)
						return
					}
					w = write{rev: resp.Header.Revision, puts: map[string]string{k1: v}}
				case 1:
					resp, err := cli.Delete(ctx, k1)
					if err != nil {
						t.Error(err)
						return
					}
					if resp.Deleted == 0 {
						continue // no revision
					}
					w = write{rev: resp.Header.Revision, dels: []string{k1}}
				default:
					if k1 == k2 {
						continue
					}
					resp, err := cli.Txn(ctx).Then(clientv3.OpPut(k1, v), clientv3.OpPut(k2, v)).Commit()
					if err != nil {
						t.Error(err)
						return
					}
					w = write{rev: resp.Header.Revision, puts: map[string]string{k1: v, k2: v}}
				}
				mu.Lock()
				writes = append(writes, w)
				mu.Unlock()
			}
		}()
	}
	wwg.Wait()
	last := int64(0)
	for _, w := range writes {
		last = max(last, w.rev)
	}
	// Wait until every watcher has heard of the last revision (an event or
	// a progress report at or past it).
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := cli.Get(ctx, "x")
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Revision >= last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("store never reached the last write")
		}
	}
	time.Sleep(500 * time.Millisecond)
	close(stopWatch)
	wg.Wait()

	// The values at each revision, to check prev_kv.
	values := map[int64]map[string]string{}
	for rev := from - 1; rev <= last; rev++ {
		resp, err := cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(rev))
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, kv := range resp.Kvs {
			m[string(kv.Key)] = string(kv.Value)
		}
		values[rev] = m
	}
	if len(writes) < 100 {
		t.Fatalf("only %d writes", len(writes))
	}
	for _, c := range checkers {
		c.verify(writes, values)
	}
}

// TestWatchOptions covers clientv3's options: WithFilterPut,
// WithFilterDelete, WithProgressNotify with a short interval, and
// RequestProgress.
func TestWatchOptions(t *testing.T) {
	n := testnode.Start(t, testnode.WithProgressNotifyInterval(200*time.Millisecond))
	cli := n.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	deletes := cli.Watch(ctx, "k", clientv3.WithFilterPut())
	puts := cli.Watch(ctx, "k", clientv3.WithFilterDelete())
	prog := cli.Watch(ctx, "idle", clientv3.WithProgressNotify())
	if _, err := cli.Put(ctx, "k", "1"); err != nil {
		t.Fatal(err)
	}
	resp, _ := cli.Delete(ctx, "k")
	delRev := resp.Header.Revision

	if r := <-puts; len(r.Events) != 1 || r.Events[0].Type != mvccpb.PUT {
		t.Fatalf("WithFilterDelete got %v", r.Events)
	}
	if r := <-deletes; len(r.Events) != 1 || r.Events[0].Type != mvccpb.DELETE || r.Events[0].Kv.ModRevision != delRev {
		t.Fatalf("WithFilterPut got %v", r.Events)
	}
	// An idle watch with progress_notify hears of the current revision.
	select {
	case r := <-prog:
		if !r.IsProgressNotify() || r.Header.Revision < delRev {
			t.Fatalf("progress notification %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no progress notification within 5s at a 200ms interval")
	}
	// RequestProgress answers on the stream's watchers.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	w := cli.Watcher
	ch := w.Watch(wctx, "other")
	if err := w.RequestProgress(wctx); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		if !r.IsProgressNotify() || r.Header.Revision < delRev {
			t.Fatalf("RequestProgress answered %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer to RequestProgress")
	}
}

// rawWatch opens a watch on a raw gRPC stream, so that not reading it
// really pushes back on the server (clientv3 reads everything into its own
// buffer).
func rawWatch(t *testing.T, ctx context.Context, n *testnode.Node, prefix string) pb.Watch_WatchClient {
	t.Helper()
	conn, err := grpc.NewClient(n.ClientAddrs()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	end := []byte(prefix)
	end[len(end)-1]++
	if err := stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte(prefix), RangeEnd: end}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := stream.Recv(); err != nil || !r.Created {
		t.Fatalf("create: %v %v", r, err)
	}
	return stream
}

// TestSlowWatcherCatchesUp: a watcher that stops reading does not hold up
// writers; when it reads again it gets every event, in order, from the
// change log. If the revisions it needs are compacted meanwhile, it is
// canceled with the compacted revision.
func TestSlowWatcherCatchesUp(t *testing.T) {
	n := testnode.Start(t)
	cli := n.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	slow := rawWatch(t, ctx, n, "s/")
	value := string(make([]byte, 4096))
	var first, last int64
	for i := range 1000 { // 4 MB: far more than the stream's windows and buffers
		resp, err := cli.Put(ctx, fmt.Sprintf("s/%d", i%50), value)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = resp.Header.Revision
		}
		last = resp.Header.Revision
	}
	next, responses := first, 0
	for next <= last {
		r, err := slow.Recv()
		if err != nil {
			t.Fatal(err)
		}
		responses++
		for _, ev := range r.Events {
			if ev.Kv.ModRevision != next {
				t.Fatalf("event at %d, want %d", ev.Kv.ModRevision, next)
			}
			next++
		}
	}
	if responses >= 1000 {
		t.Fatalf("%d responses for 1000 revisions: the watcher never fell behind", responses)
	}

	// A watcher that falls behind past a compaction is canceled with it.
	behind := rawWatch(t, ctx, n, "c/")
	for i := range 1000 {
		if _, err := cli.Put(ctx, fmt.Sprintf("c/%d", i%20), value); err != nil {
			t.Fatal(err)
		}
	}
	resp, _ := cli.Get(ctx, "x")
	compactAt := resp.Header.Revision
	if _, err := cli.Compact(ctx, compactAt, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	var lastEvent int64
	for {
		r, err := behind.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.CompactRevision != 0 {
			if r.CompactRevision != compactAt || !r.Canceled {
				t.Fatalf("canceled with compact_revision %d (canceled %v), want %d", r.CompactRevision, r.Canceled, compactAt)
			}
			if lastEvent >= compactAt {
				t.Fatalf("canceled after it had every event up to %d", lastEvent)
			}
			return
		}
		for _, ev := range r.Events {
			if lastEvent != 0 && ev.Kv.ModRevision != lastEvent+1 {
				t.Fatalf("gap: %d after %d", ev.Kv.ModRevision, lastEvent)
			}
			lastEvent = ev.Kv.ModRevision
		}
	}
}

// TestTenThousandWatchers: 10,000 watchers on one node, over 20 streams,
// all receive every event.
func TestTenThousandWatchers(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 watchers")
	}
	n := testnode.Start(t)
	cli := n.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	const streams, perStream, puts = 20, 500, 20
	var wg sync.WaitGroup
	counts := make([]int, streams*perStream)
	ready := make(chan struct{}, streams*perStream)
	for s := range streams {
		w := clientv3.NewWatcher(cli)
		defer w.Close()
		for i := range perStream {
			idx := s*perStream + i
			ch := w.Watch(ctx, "ten/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := range ch {
					if r.Created {
						ready <- struct{}{}
						continue
					}
					counts[idx] += len(r.Events)
					if counts[idx] == puts {
						return
					}
				}
			}()
		}
	}
	for range streams * perStream {
		<-ready
	}
	for i := range puts {
		if _, err := cli.Put(ctx, fmt.Sprintf("ten/%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		missing := 0
		for _, c := range counts {
			if c < puts {
				missing++
			}
		}
		t.Fatalf("%d of %d watchers did not get all %d events", missing, len(counts), puts)
	}
}
