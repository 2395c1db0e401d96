package testcluster

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/basaltdb/basalt/txncoord"
)

const (
	bankAccounts = 12
	bankStart    = 100
	bankPrefix   = "acct/"
)

func account(i int) string { return fmt.Sprintf("%s%02d", bankPrefix, i) }

// transfer is a transfer a client saw acknowledged.
type transfer struct {
	rev      int64
	from, to string
	fromVal  string
	toVal    string
}

// TestBankAcrossShards moves money between accounts spread over many
// shards with transactions that compare mod revisions, while shards split
// and nodes are stopped and restarted. Every linearizable read of all
// accounts, and every read at an older revision, sums to the same total;
// watches over the accounts (open while their shards split) see every
// acknowledged transfer once, in revision order, each transfer's two
// events in one response, with prev_kv.
func TestBankAcrossShards(t *testing.T) {
	c := Start(t, 3, WithLockTTL(2*time.Second))
	ctx := ctxT(t, 4*time.Minute)
	setup := c.Client(t)
	var ops []clientv3.Op
	for i := range bankAccounts {
		ops = append(ops, clientv3.OpPut(account(i), strconv.Itoa(bankStart)))
	}
	created, err := setup.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		t.Fatal(err)
	}
	total := bankAccounts * bankStart
	// Accounts in six shards, split through different members.
	for i, at := range []int{2, 4, 6, 8, 10} {
		split(t, c, i%3, account(at))
	}

	watchers := []*watchLog{
		startWatchLog(ctx, c.Client(t, 0, 1, 2), created.Header.Revision+1),
		startWatchLog(ctx, c.Client(t, 2, 1, 0), created.Header.Revision+1),
	}

	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		acked     []transfer
		transfers atomic.Int64
		reads     atomic.Int64
	)
	wctx, stop := context.WithCancel(ctx)
	for id := range 4 {
		cl := c.Client(t)
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(id), 7))
			for wctx.Err() == nil {
				from, to := rnd.IntN(bankAccounts), rnd.IntN(bankAccounts-1)
				if to >= from {
					to++
				}
				octx, cancel := context.WithTimeout(wctx, 5*time.Second)
				tr, err := bankTransfer(octx, cl, account(from), account(to), 1+rnd.IntN(10))
				cancel()
				if err == nil && tr != nil {
					mu.Lock()
					acked = append(acked, *tr)
					mu.Unlock()
					transfers.Add(1)
				}
			}
		})
	}
	for id := range 2 {
		cl := c.Client(t)
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(id), 11))
			for wctx.Err() == nil {
				octx, cancel := context.WithTimeout(wctx, 5*time.Second)
				var opts []clientv3.OpOption
				if rnd.IntN(3) == 0 {
					opts = append(opts, clientv3.WithSerializable())
				}
				resp, err := cl.Get(octx, bankPrefix, append(opts, clientv3.WithPrefix())...)
				if err == nil {
					if sum := bankSum(t, resp); sum != total {
						t.Errorf("accounts at revision %d sum to %d, want %d", resp.Header.Revision, sum, total)
					}
					// An older revision reads a consistent state too.
					if old := resp.Header.Revision - rnd.Int64N(resp.Header.Revision-created.Header.Revision+1); old >= created.Header.Revision {
						at, err := cl.Get(octx, bankPrefix, clientv3.WithPrefix(), clientv3.WithRev(old))
						if err == nil {
							if sum := bankSum(t, at); sum != total {
								t.Errorf("accounts at old revision %d sum to %d, want %d", old, sum, total)
							}
						}
					}
					reads.Add(1)
				}
				cancel()
			}
		})
	}

	// Splits, then each member stopped and restarted in turn (they lead
	// different shards).
	for i, at := range []int{1, 3, 5} {
		time.Sleep(time.Second)
		split(t, c, i%3, account(at))
	}
	restartEach(c, 1500*time.Millisecond)
	time.Sleep(2 * time.Second)
	stop()
	wg.Wait()
	if transfers.Load() < 50 || reads.Load() < 50 {
		t.Fatalf("only %d transfers and %d reads completed", transfers.Load(), reads.Load())
	}

	// Every member reads the same total, from every account's last
	// acknowledged value on.
	for i := range c.Nodes {
		resp, err := c.Client(t, i).Get(ctx, bankPrefix, clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if sum := bankSum(t, resp); sum != total {
			t.Fatalf("member %d: accounts sum to %d, want %d", i, sum, total)
		}
	}
	final, err := setup.Get(ctx, bankPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range watchers {
		w.waitFor(t, final.Header.Revision)
		w.check(t, acked)
	}
	// A watch resumed from the middle sees the same history.
	mid := created.Header.Revision + (final.Header.Revision-created.Header.Revision)/2
	resumed := startWatchLog(ctx, c.Client(t, 1), mid)
	resumed.waitFor(t, final.Header.Revision)
	watchers[0].sameFrom(t, resumed, mid)
	// Every transfer committed on all its shards: no primary keeps a
	// commit record.
	for i, n := range c.Nodes {
		waitFor(t, fmt.Sprintf("member %d drops every commit record", i), func() bool {
			k, err := n.TxnRecords()
			return err == nil && k == 0
		})
	}
	t.Logf("%d transfers, %d reads of all accounts, revisions %d..%d", transfers.Load(), reads.Load(), created.Header.Revision, final.Header.Revision)
}

// bankTransfer moves amount from one account to another if neither
// changed since it read them; nil without error when one did.
func bankTransfer(ctx context.Context, cl *clientv3.Client, from, to string, amount int) (*transfer, error) {
	get, err := cl.Txn(ctx).Then(clientv3.OpGet(from), clientv3.OpGet(to)).Commit()
	if err != nil {
		return nil, err
	}
	f := get.Responses[0].GetResponseRange().Kvs[0]
	g := get.Responses[1].GetResponseRange().Kvs[0]
	fv, _ := strconv.Atoi(string(f.Value))
	tv, _ := strconv.Atoi(string(g.Value))
	amount = min(amount, fv)
	tr := &transfer{from: from, to: to, fromVal: strconv.Itoa(fv - amount), toVal: strconv.Itoa(tv + amount)}
	resp, err := cl.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(from), "=", f.ModRevision), clientv3.Compare(clientv3.ModRevision(to), "=", g.ModRevision)).
		Then(clientv3.OpPut(from, tr.fromVal), clientv3.OpPut(to, tr.toVal)).Commit()
	if err != nil || !resp.Succeeded {
		return nil, err
	}
	tr.rev = resp.Header.Revision
	return tr, nil
}

func bankSum(t *testing.T, resp *clientv3.GetResponse) int {
	t.Helper()
	if len(resp.Kvs) != bankAccounts {
		t.Errorf("%d accounts at revision %d, want %d", len(resp.Kvs), resp.Header.Revision, bankAccounts)
	}
	sum := 0
	for _, kv := range resp.Kvs {
		v, err := strconv.Atoi(string(kv.Value))
		if err != nil {
			t.Errorf("account %s holds %q", kv.Key, kv.Value)
		}
		sum += v
	}
	return sum
}

// watchLog records a watch over the accounts with prev_kv and progress
// notifications.
type watchLog struct {
	mu        sync.Mutex
	responses []clientv3.WatchResponse
	last      int64 // newest revision seen (events or progress)
	err       error
}

func startWatchLog(ctx context.Context, cl *clientv3.Client, from int64) *watchLog {
	w := &watchLog{}
	go func() {
		// A watch that ends (its member stopped while the cluster had no
		// leader) is opened again after its last event, as clients do.
		next := from
		for ctx.Err() == nil {
			ch := cl.Watch(ctx, bankPrefix, clientv3.WithPrefix(), clientv3.WithRev(next),
				clientv3.WithPrevKV(), clientv3.WithProgressNotify())
			for resp := range ch {
				w.mu.Lock()
				if err := resp.Err(); err != nil && ctx.Err() == nil {
					w.err = err
				}
				w.responses = append(w.responses, resp)
				w.last = max(w.last, resp.Header.Revision)
				for _, ev := range resp.Events {
					w.last = max(w.last, ev.Kv.ModRevision)
					next = ev.Kv.ModRevision + 1
				}
				w.mu.Unlock()
			}
		}
	}()
	go func() {
		// Ask for progress now and then: it must never run ahead of events.
		for ctx.Err() == nil {
			time.Sleep(300 * time.Millisecond)
			_ = cl.RequestProgress(ctx)
		}
	}()
	return w
}

// waitFor waits until the watch has seen revision rev.
func (w *watchLog) waitFor(t *testing.T, rev int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		w.mu.Lock()
		last, err, n := w.last, w.err, len(w.responses)
		w.mu.Unlock()
		if last >= rev {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("watch at revision %d after %d responses, want %d (error: %v)", last, n, rev, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// events returns the watch's events and, per revision, the index of the
// response that held it.
func (w *watchLog) events() []*mvccpb.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*mvccpb.Event
	for _, r := range w.responses {
		out = append(out, r.Events...)
	}
	return out
}

// check verifies the watch guarantees against the acknowledged
// transfers: ordered, unique, atomic (a revision's events in one
// response), reliable (every acknowledged transfer there), bookmarkable
// (no event at or below a progress notification's revision after it) and
// prev_kv (each event's previous value is the key's value before).
func (w *watchLog) check(t *testing.T, acked []transfer) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		t.Fatalf("watch failed: %v", w.err)
	}
	var (
		lastRev  int64
		progress int64
		value    = map[string]string{}
		byRev    = map[int64][]*mvccpb.Event{}
	)
	for _, r := range w.responses {
		if r.IsProgressNotify() {
			progress = max(progress, r.Header.Revision)
			continue
		}
		for i, ev := range r.Events {
			rev := ev.Kv.ModRevision
			switch {
			case rev < lastRev:
				t.Fatalf("event at revision %d after one at %d", rev, lastRev)
			case rev == lastRev && i == 0:
				t.Fatalf("revision %d's events came in two responses", rev)
			case rev <= progress:
				t.Fatalf("event at revision %d after a progress notification at %d", rev, progress)
			}
			for _, other := range byRev[rev] {
				if string(other.Kv.Key) == string(ev.Kv.Key) {
					t.Fatalf("key %s twice at revision %d", ev.Kv.Key, rev)
				}
			}
			if prev, ok := value[string(ev.Kv.Key)]; ok && (ev.PrevKv == nil || string(ev.PrevKv.Value) != prev) {
				t.Fatalf("event %s at %d: prev_kv %v, want value %q", ev.Kv.Key, rev, ev.PrevKv, prev)
			}
			value[string(ev.Kv.Key)] = string(ev.Kv.Value)
			byRev[rev] = append(byRev[rev], ev)
			lastRev = rev
		}
	}
	for _, tr := range acked {
		evs := byRev[tr.rev]
		got := map[string]string{}
		for _, ev := range evs {
			got[string(ev.Kv.Key)] = string(ev.Kv.Value)
		}
		if len(evs) != 2 || got[tr.from] != tr.fromVal || got[tr.to] != tr.toVal {
			t.Fatalf("transfer at revision %d (%s=%s, %s=%s): watched %v", tr.rev, tr.from, tr.fromVal, tr.to, tr.toVal, got)
		}
	}
}

// sameFrom requires both watches to hold the same events from revision
// from on.
func (w *watchLog) sameFrom(t *testing.T, other *watchLog, from int64) {
	t.Helper()
	var a, b []string
	for _, ev := range w.events() {
		if ev.Kv.ModRevision >= from {
			a = append(a, fmt.Sprintf("%s %s@%d=%s", ev.Type, ev.Kv.Key, ev.Kv.ModRevision, ev.Kv.Value))
		}
	}
	for _, ev := range other.events() {
		b = append(b, fmt.Sprintf("%s %s@%d=%s", ev.Type, ev.Kv.Key, ev.Kv.ModRevision, ev.Kv.Value))
	}
	if len(a) != len(b) {
		t.Fatalf("resumed watch: %d events from revision %d, the first watch %d", len(b), from, len(a))
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("resumed watch: event %d is %s, the first watch had %s", i, b[i], a[i])
		}
	}
}

// TestCoordinatorCrashLeavesNoHalfTxn stops the member that coordinates a
// transaction across shards once it holds the locks, and once the primary
// committed: after the locks' TTL the shards roll the transaction back,
// or forward, and no reader ever sees half of it.
func TestCoordinatorCrashLeavesNoHalfTxn(t *testing.T) {
	for _, tc := range []struct {
		name      string
		at        txncoord.Hook
		committed bool
	}{
		{"before-commit", txncoord.HookLocked, false},
		{"after-primary-commit", txncoord.HookCommitted, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Start(t, 3, WithLockTTL(time.Second))
			ctx := ctxT(t, time.Minute)
			if _, err := c.Client(t).Txn(ctx).Then(clientv3.OpPut("a", "0"), clientv3.OpPut("m", "0")).Commit(); err != nil {
				t.Fatal(err)
			}
			split(t, c, 1, "h")
			split(t, c, 2, "t")
			// The transaction runs where its primary (the shard of "a",
			// the lowest id) is led; the readers use the other members.
			coord := shardLeader(t, c, "a")
			var others []int
			for i := range c.Nodes {
				if i != coord {
					others = append(others, i)
				}
			}
			cl := c.Client(t, others...)

			reached := make(chan struct{})
			var once sync.Once
			txncoord.SetTestHook(func(_ context.Context, at txncoord.Hook) bool {
				if at != tc.at {
					return false
				}
				once.Do(func() { close(reached) })
				return true
			})
			t.Cleanup(func() { txncoord.SetTestHook(nil) })
			go func() {
				_, _ = c.Client(t, coord).Txn(ctx).Then(clientv3.OpPut("a", "1"), clientv3.OpPut("m", "1")).Commit()
			}()
			select {
			case <-reached:
			case <-ctx.Done():
				t.Fatal("the transaction never reached the hook")
			}
			c.Stop(coord)
			txncoord.SetTestHook(nil)
			// A write in a third shard moves the cluster's revision past
			// the locks' start: reads now wait for the locks to go.
			if _, err := cl.Put(ctx, "x", "1"); err != nil {
				t.Fatal(err)
			}

			// Readers on the other members see both keys old or both new,
			// at every moment, and in the end what the primary decided.
			want := "0"
			if tc.committed {
				want = "1"
			}
			stopped := time.Now()
			deadline := stopped.Add(20 * time.Second)
			for {
				resp, err := cl.Get(ctx, "a", clientv3.WithRange("n"))
				if err == nil {
					if len(resp.Kvs) != 2 || string(resp.Kvs[0].Value) != string(resp.Kvs[1].Value) {
						t.Fatalf("half a transaction visible at revision %d: %v", resp.Header.Revision, resp.Kvs)
					}
					if string(resp.Kvs[0].Value) == want {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("keys never became %q (last: %v %v)", want, resp, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Logf("keys read %q %v after the coordinator stopped", want, time.Since(stopped))
			// The lock resolution that rolled a shard forward told the
			// primary: its commit record is gone from every replica.
			for _, i := range others {
				waitFor(t, fmt.Sprintf("member %d drops the commit record", i), func() bool {
					n, err := c.Nodes[i].TxnRecords()
					return err == nil && n == 0
				})
			}
			// The shards serve writes again.
			if _, err := cl.Txn(ctx).Then(clientv3.OpPut("a", "2"), clientv3.OpPut("m", "2")).Commit(); err != nil {
				t.Fatal(err)
			}
			if _, err := cl.Put(ctx, "b", "x"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A commit record the primary was never told to drop (its coordinator
// stopped after every shard committed) is found and dropped by the
// primary's leader.
func TestStaleCommitRecordIsDropped(t *testing.T) {
	c := Start(t, 3, WithLockTTL(time.Second))
	ctx := ctxT(t, time.Minute)
	cl := c.Client(t)
	split(t, c, 0, "h")
	var once sync.Once
	txncoord.SetTestHook(func(_ context.Context, at txncoord.Hook) (crash bool) {
		if at == txncoord.HookForget {
			once.Do(func() { crash = true })
		}
		return crash
	})
	t.Cleanup(func() { txncoord.SetTestHook(nil) })
	if _, err := cl.Txn(ctx).Then(clientv3.OpPut("a", "1"), clientv3.OpPut("m", "1")).Commit(); err != nil {
		t.Fatal(err)
	}
	records := func() (n int) {
		for _, nd := range c.Nodes {
			k, err := nd.TxnRecords()
			if err != nil {
				t.Fatal(err)
			}
			n += k
		}
		return n
	}
	if n := records(); n == 0 {
		t.Fatal("no commit record right after the transaction: the test hook did not keep it")
	}
	waitFor(t, "the stale commit record is dropped", func() bool { return records() == 0 })
	if resp, err := cl.Get(ctx, "a", clientv3.WithRange("n")); err != nil || len(resp.Kvs) != 2 || string(resp.Kvs[0].Value) != "1" || string(resp.Kvs[1].Value) != "1" {
		t.Fatalf("keys after the sweep: %v %v", resp, err)
	}
}

// shardLeader returns the index of the member that leads the shard
// holding key.
func shardLeader(t *testing.T, c *Cluster, key string) int {
	t.Helper()
	for _, s := range shards(t, c, 0) {
		d := s.Descriptor_
		if key >= string(d.Start) && (len(d.End) == 0 || key < string(d.End)) {
			for i, n := range c.Nodes {
				if n.ID == s.Leader {
					return i
				}
			}
		}
	}
	t.Fatalf("no leader known for the shard of %q", key)
	return -1
}

// TestDenseRevisionsAcrossShards runs a fault-free mix of writes in one
// shard and across shards (transactions, deletes, a lease revoked with
// keys in three shards): the current revision grows by exactly the number
// of writes, and each write across shards takes one revision.
func TestDenseRevisionsAcrossShards(t *testing.T) {
	c := Start(t, 3)
	ctx := ctxT(t, 2*time.Minute)
	cl := c.Client(t)
	for i, at := range []string{"k2", "k4", "k6", "k8"} {
		split(t, c, i%3, at)
	}
	start, err := cl.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg     sync.WaitGroup
		writes atomic.Int64
	)
	for id := range 4 {
		cl := c.Client(t)
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(id), 3))
			for i := range 60 {
				a, b := fmt.Sprintf("k%d%02d", rnd.IntN(10), id), fmt.Sprintf("k%d%02d", rnd.IntN(10), id)
				v := fmt.Sprint(i)
				var err error
				if i%2 == 0 {
					_, err = cl.Put(ctx, a, v)
				} else {
					_, err = cl.Txn(ctx).Then(clientv3.OpPut(a, v), clientv3.OpPut(b+"x", v)).Commit()
				}
				if err != nil {
					t.Error(err)
					return
				}
				writes.Add(1)
			}
		})
	}
	wg.Wait()

	// A delete across shards takes one revision.
	del, err := cl.Delete(ctx, "k", clientv3.WithRange("k5"))
	if err != nil || del.Deleted == 0 {
		t.Fatalf("delete across shards: %v %v", del, err)
	}
	writes.Add(1)
	// So does a lease revoked with keys in three shards, and one that
	// expires.
	for _, revoke := range []bool{true, false} {
		lease, err := cl.Grant(ctx, 1) // raised to the minimum TTL
		if revoke {
			lease, err = cl.Grant(ctx, 60)
		}
		if err != nil {
			t.Fatal(err)
		}
		keys := []string{"k1-lease", "k5-lease", "k9-lease"}
		for _, k := range keys {
			if _, err := cl.Put(ctx, k, "v", clientv3.WithLease(lease.ID)); err != nil {
				t.Fatal(err)
			}
			writes.Add(1)
		}
		wctx, cancel := context.WithCancel(ctx)
		w := cl.Watch(wctx, "k", clientv3.WithRange("l"), clientv3.WithRev(0))
		if revoke {
			if _, err := cl.Revoke(ctx, lease.ID); err != nil {
				t.Fatal(err)
			}
		}
		writes.Add(1)
		select {
		case wr := <-w:
			rev := wr.Events[0].Kv.ModRevision
			if len(wr.Events) != 3 || wr.Events[2].Kv.ModRevision != rev {
				t.Fatalf("lease revoked (%v) or expired: %d events in the first response %v, want 3 deletes at one revision", revoke, len(wr.Events), wr.Events)
			}
			for i, ev := range wr.Events {
				if ev.Type != mvccpb.DELETE || string(ev.Kv.Key) != keys[i] {
					t.Fatalf("lease revoked (%v) or expired: %v", revoke, ev)
				}
			}
		case <-ctx.Done():
			t.Fatal("no events of the lease's end")
		}
		cancel()
	}

	end, err := cl.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if got := end.Header.Revision - start.Header.Revision; got != writes.Load() {
		t.Fatalf("revision moved by %d over %d writes", got, writes.Load())
	}
}

// multiRegs are the registers of the multi-key model, one per shard.
const multiRegs = 4

func multiReg(i int) string { return fmt.Sprintf("reg/%d", i) }

// multiState is the model's state: the registers' values and the newest
// revision a completed operation revealed.
type multiState struct {
	vals [multiRegs]string
	rev  int64
}

// multiInput is one operation: a read of every register, or a transaction
// that writes two registers (under compares on both, for cas).
type multiInput struct {
	op     string // "read", "write" or "cas"
	i, j   int
	value  string
	expect [2]string // cas: the values of i and j it compares
}

type multiOutput struct {
	vals    [multiRegs]string // read
	rev     int64             // the response's header revision
	ok      bool              // cas
	unknown bool
}

// multiModel is a set of registers written together by transactions
// across shards, with one cluster-wide revision: a read sees the values
// and a revision not below any revision revealed before it; a write
// commits at a revision above every one revealed before it.
var multiModel = (&porcupine.NondeterministicModel{
	Init: func() []any {
		var s multiState
		for i := range s.vals {
			s.vals[i] = "0"
		}
		return []any{s}
	},
	Step: func(state, input, output any) []any {
		st, in, out := state.(multiState), input.(multiInput), output.(multiOutput)
		written := st
		written.vals[in.i], written.vals[in.j] = in.value, in.value
		matches := in.op == "write" || st.vals[in.i] == in.expect[0] && st.vals[in.j] == in.expect[1]
		switch {
		case in.op == "read":
			if out.vals != st.vals || out.rev < st.rev {
				return nil
			}
			st.rev = out.rev
			return []any{st}
		case out.unknown:
			if matches {
				return []any{st, written} // it may or may not have applied
			}
			return []any{st}
		case out.rev <= st.rev && (in.op == "write" || out.ok):
			return nil // a write must take a newer revision
		case in.op == "write" || out.ok:
			if !matches {
				return nil
			}
			written.rev = out.rev
			return []any{written}
		}
		if matches { // a cas that failed although it matched
			return nil
		}
		return []any{st}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(multiInput), output.(multiOutput)
		switch {
		case in.op == "read":
			return fmt.Sprintf("read -> %v @%d", out.vals, out.rev)
		case out.unknown:
			return fmt.Sprintf("%s(%d,%d := %s) -> ?", in.op, in.i, in.j, in.value)
		}
		return fmt.Sprintf("%s(%d,%d %v := %s) -> %v @%d", in.op, in.i, in.j, in.expect, in.value, out.ok, out.rev)
	},
}).ToModel()

// TestLinearizableTxnsAcrossShards runs transactions that write two
// registers in different shards (blind, and compare-and-swap on both) and
// reads of all registers, from several clients, while members are stopped
// and restarted; porcupine checks the history against a model with one
// cluster-wide revision.
func TestLinearizableTxnsAcrossShards(t *testing.T) {
	c := Start(t, 3, WithLockTTL(2*time.Second))
	ctx := ctxT(t, 3*time.Minute)
	setup := c.Client(t)
	var ops []clientv3.Op
	for i := range multiRegs {
		ops = append(ops, clientv3.OpPut(multiReg(i), "0"))
	}
	if _, err := setup.Txn(ctx).Then(ops...).Commit(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < multiRegs; i++ {
		split(t, c, i%3, multiReg(i))
	}

	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	var (
		mu      sync.Mutex
		history []porcupine.Operation
		wg      sync.WaitGroup
	)
	wctx, stop := context.WithCancel(ctx)
	for id := range 3 {
		cl := c.Client(t)
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(id), 5))
			var last multiOutput
			for seq := 0; wctx.Err() == nil; seq++ {
				in := multiInput{i: rnd.IntN(multiRegs), j: rnd.IntN(multiRegs - 1), value: fmt.Sprintf("%d-%d", id, seq)}
				if in.j >= in.i {
					in.j++
				}
				var out multiOutput
				call := now()
				octx, cancel := context.WithTimeout(wctx, 3*time.Second)
				var err error
				switch r := rnd.IntN(10); {
				case r < 4:
					in.op = "read"
					var resp *clientv3.GetResponse
					if resp, err = cl.Get(octx, "reg/", clientv3.WithPrefix()); err == nil {
						for k, kv := range resp.Kvs {
							out.vals[k] = string(kv.Value)
						}
						out.rev = resp.Header.Revision
						last = out
					}
				case r < 6:
					in.op = "write"
					var resp *clientv3.TxnResponse
					resp, err = cl.Txn(octx).Then(clientv3.OpPut(multiReg(in.i), in.value), clientv3.OpPut(multiReg(in.j), in.value)).Commit()
					if err == nil {
						out.rev = resp.Header.Revision
					}
				default:
					in.op = "cas"
					in.expect = [2]string{last.vals[in.i], last.vals[in.j]}
					if in.expect[0] == "" {
						in.expect = [2]string{"0", "0"}
					}
					var resp *clientv3.TxnResponse
					resp, err = cl.Txn(octx).If(
						clientv3.Compare(clientv3.Value(multiReg(in.i)), "=", in.expect[0]),
						clientv3.Compare(clientv3.Value(multiReg(in.j)), "=", in.expect[1]),
					).Then(clientv3.OpPut(multiReg(in.i), in.value), clientv3.OpPut(multiReg(in.j), in.value)).Commit()
					if err == nil {
						out.ok, out.rev = resp.Succeeded, resp.Header.Revision
					}
				}
				cancel()
				ret := now()
				if err != nil {
					if in.op == "read" {
						continue // a failed read observed nothing
					}
					out.unknown, ret = true, math.MaxInt64
				}
				mu.Lock()
				history = append(history, porcupine.Operation{ClientId: id, Input: in, Call: call, Output: out, Return: ret})
				mu.Unlock()
			}
		})
	}
	restartEach(c, 2*time.Second)
	time.Sleep(2 * time.Second)
	stop()
	wg.Wait()
	checkHistory(t, multiModel, history, 100, func(out any) bool { return out.(multiOutput).unknown })
}

// restartEach stops and restarts each member in turn, pause apart.
func restartEach(c *Cluster, pause time.Duration) {
	for victim := range c.Nodes {
		time.Sleep(pause)
		c.Stop(victim)
		time.Sleep(time.Second)
		c.Restart(victim)
	}
}

// A lease revoked while a transaction across shards that attaches keys to
// it is between its primary's commit and the other shards' commits: the
// revocation deletes the keys it finds, the transaction then commits the
// rest, and those keys are left attached to a lease that no longer exists.
// The lessor's sweep for such keys deletes them.
func TestRevokeDuringTxnAcrossShardsLeavesNoKeys(t *testing.T) {
	c := Start(t, 1, WithLeaseOrphanInterval(200*time.Millisecond))
	ctx := ctxT(t, time.Minute)
	cl := c.Client(t)
	split(t, c, 0, "h")
	lease, err := cl.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}

	committed, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	txncoord.SetTestHook(func(_ context.Context, at txncoord.Hook) bool {
		if at == txncoord.HookCommitted {
			once.Do(func() {
				close(committed)
				<-release
			})
		}
		return false
	})
	t.Cleanup(func() { txncoord.SetTestHook(nil) })
	txnDone := make(chan error, 1)
	go func() {
		_, err := cl.Txn(ctx).Then(clientv3.OpPut("a", "v", clientv3.WithLease(lease.ID)), clientv3.OpPut("m", "v", clientv3.WithLease(lease.ID))).Commit()
		txnDone <- err
	}()
	select {
	case <-committed:
	case <-ctx.Done():
		t.Fatal("the transaction never committed its primary")
	}
	if _, err := cl.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-txnDone; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "no key is left attached to the revoked lease", func() bool {
		resp, err := cl.Get(ctx, "", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.Kvs) == 0
	})
}
