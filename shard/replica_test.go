package shard

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	sm "github.com/lni/dragonboat/v4/statemachine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/basaltdb/basalt/internal/etcdproc"
	"github.com/basaltdb/basalt/internal/logging"
	"github.com/basaltdb/basalt/mvcc"
)

func TestMain(m *testing.M) {
	logging.RouteDragonboat(zap.NewNop())
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"))
}

// countingAllocator hands out revisions from 2 on, as the TSO does, and
// counts its calls.
type countingAllocator struct {
	mu    sync.Mutex
	next  int64
	calls int
}

func (a *countingAllocator) Allocate(_ context.Context, n int) (int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	first := a.next
	a.next += int64(n)
	a.calls++
	return first, nil
}

func (a *countingAllocator) Current(context.Context) (int64, error) { return a.current(), nil }

// current is the newest revision handed out.
func (a *countingAllocator) current() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.next - 1
}

// testReplica is one data shard on a one-node dragonboat NodeHost with a
// Pebble store on disk.
type testReplica struct {
	*Replica
	alloc  *countingAllocator
	store  *mvcc.Store
	leases *leaseSet
}

// leaseSet stands in for the meta group's lease table.
type leaseSet struct{ ids sync.Map }

func (l *leaseSet) LeaseExists(id int64) bool { _, ok := l.ids.Load(id); return ok }

func startReplica(t *testing.T, cfg SequencerConfig) *testReplica {
	t.Helper()
	dir := t.TempDir()
	store, err := mvcc.Open(filepath.Join(dir, "data"), mvcc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	addr, err := etcdproc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	nh, err := dragonboat.NewNodeHost(config.NodeHostConfig{
		NodeHostDir:    filepath.Join(dir, "raft"),
		RTTMillisecond: 5,
		RaftAddress:    addr,
		Expert:         config.ExpertConfig{LogDB: config.GetTinyMemLogDBConfig()},
	})
	if err != nil {
		t.Fatal(err)
	}
	dsm := NewDataStateMachine(store, 2, 1, nil, nil, mvcc.AllowAllLeases, zap.NewNop())
	err = nh.StartOnDiskReplica(map[uint64]dragonboat.Target{1: addr}, false,
		func(uint64, uint64) sm.IOnDiskStateMachine { return dsm },
		config.Config{ShardID: 2, ReplicaID: 1, ElectionRTT: 10, HeartbeatRTT: 1, CheckQuorum: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if leader, term, ok, _ := nh.GetLeaderID(2); ok {
			alloc := &countingAllocator{next: 2}
			leases := &leaseSet{}
			rep, err := NewReplica(ctx, nh, dsm, alloc, leases, cfg, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			rep.SetLeader(leader, term)
			t.Cleanup(func() {
				rep.Stop()
				nh.Close()
				store.Close()
			})
			return &testReplica{Replica: rep, alloc: alloc, store: store, leases: leases}
		}
		select {
		case <-ctx.Done():
			t.Fatal("no leader")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func putTxn(k, v string) *pb.TxnRequest {
	return &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}}}}
}

// TestConcurrentPutsGetDenseRevisions: many concurrent writers, each write
// gets its own revision, revisions are exactly 2..N+1, and the sequencer
// takes revisions per batch, not per write.
func TestConcurrentPutsGetDenseRevisions(t *testing.T) {
	r := startReplica(t, SequencerConfig{})
	const writers, each = 32, 40
	revs := make(chan int64, writers*each)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				resp, err := r.Write(context.Background(), putTxn(fmt.Sprintf("k%d", w), fmt.Sprint(i)))
				if err != nil {
					t.Error(err)
					return
				}
				revs <- resp.Header.Revision
			}
		}()
	}
	wg.Wait()
	close(revs)
	seen := make(map[int64]bool)
	for rev := range revs {
		if seen[rev] {
			t.Fatalf("revision %d given twice", rev)
		}
		seen[rev] = true
	}
	for rev := int64(2); rev < 2+writers*each; rev++ {
		if !seen[rev] {
			t.Fatalf("revision %d missing: revisions are not dense", rev)
		}
	}
	if r.Shard().Rev() != 1+writers*each {
		t.Fatalf("shard at revision %d, want %d", r.Shard().Rev(), 1+writers*each)
	}
	if r.alloc.calls >= writers*each {
		t.Fatalf("%d allocations for %d writes: the sequencer does not batch", r.alloc.calls, writers*each)
	}
	t.Logf("%d writes in %d allocations", writers*each, r.alloc.calls)
}

// TestCompareAndSwapContention: writers increment one counter with
// compare-on-mod-revision transactions. Every increment lands once, and
// only successful swaps take revisions.
func TestCompareAndSwapContention(t *testing.T) {
	r := startReplica(t, SequencerConfig{})
	if _, err := r.Write(context.Background(), putTxn("counter", "0")); err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 15
	var wg sync.WaitGroup
	var mu sync.Mutex
	swaps := 0
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < each; {
				view := r.View()
				rr, err := view.Range(context.Background(), []byte("counter"), nil, mvcc.RangeOptions{})
				if err != nil {
					t.Error(err)
					return
				}
				kv := rr.KVs[0]
				var n int
				fmt.Sscan(string(kv.Value), &n)
				txn := &pb.TxnRequest{
					Compare: []*pb.Compare{{Key: []byte("counter"), Target: pb.Compare_MOD, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_ModRevision{ModRevision: kv.ModRevision}}},
					Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("counter"), Value: []byte(fmt.Sprint(n + 1))}}}},
				}
				resp, err := r.Write(context.Background(), txn)
				if errors.Is(err, ErrNoWrite) {
					continue // lost the race: the compare failed, nothing written
				}
				if err != nil {
					t.Error(err)
					return
				}
				if resp.Succeeded {
					done++
					mu.Lock()
					swaps++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	rr, _ := r.View().Range(context.Background(), []byte("counter"), nil, mvcc.RangeOptions{})
	if got, want := string(rr.KVs[0].Value), fmt.Sprint(writers*each); got != want {
		t.Fatalf("counter = %s, want %s", got, want)
	}
	if want := int64(2 + swaps); r.Shard().Rev() != want {
		t.Fatalf("shard at revision %d after %d swaps, want %d: failed compares took revisions", r.Shard().Rev(), swaps, want)
	}
}

// TestNoWriteTakesNoRevision: a delete of an absent key and a transaction
// whose chosen branch is empty are answered ErrNoWrite and leave the
// revision alone; bad input is answered with mvcc's errors.
func TestNoWriteTakesNoRevision(t *testing.T) {
	r := startReplica(t, SequencerConfig{})
	if _, err := r.Write(context.Background(), putTxn("a", "1")); err != nil {
		t.Fatal(err)
	}
	del := &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("absent")}}}}}
	failBranch := &pb.TxnRequest{Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("x")}}}}}
	for _, txn := range []*pb.TxnRequest{del, failBranch} {
		if _, err := r.Write(context.Background(), txn); !errors.Is(err, ErrNoWrite) {
			t.Fatalf("got %v, want ErrNoWrite", err)
		}
	}
	ignore := &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("absent"), IgnoreValue: true}}}}}
	if _, err := r.Write(context.Background(), ignore); !errors.Is(err, mvcc.ErrKeyNotFound) {
		t.Fatalf("ignore_value on an absent key: %v", err)
	}
	lease := &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("a"), Lease: 9}}}}}
	if _, err := r.Write(context.Background(), lease); !errors.Is(err, mvcc.ErrLeaseNotFound) {
		t.Fatalf("unknown lease: %v", err)
	}
	if r.Shard().Rev() != 2 || r.alloc.current() != 2 {
		t.Fatalf("shard at %d, allocator at %d after writes that changed nothing; want 2, 2", r.Shard().Rev(), r.alloc.current())
	}
}

// TestReadAtWaitsForResolvedWrites: a reader that takes the allocator's
// newest revision R and reads at R always finds the shard applied up to R,
// while writers keep writing.
func TestReadAtWaitsForResolvedWrites(t *testing.T) {
	r := startReplica(t, SequencerConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				_, _ = r.Write(ctx, putTxn(fmt.Sprintf("w%d", w), fmt.Sprint(i)))
			}
		}()
	}
	for range 300 {
		rev := r.alloc.current()
		view, err := r.ReadAt(context.Background(), rev)
		if err != nil {
			t.Fatal(err)
		}
		if applied := r.Shard().Rev(); applied < rev {
			t.Fatalf("read at %d allowed while the shard applied only up to %d", rev, applied)
		}
		if view.Rev() != rev {
			t.Fatalf("view at %d, want %d", view.Rev(), rev)
		}
	}
	cancel()
	wg.Wait()
}

// TestStopFailsPendingWrites: writes waiting when the sequencer stops get
// ErrStopped, and later writes are refused.
func TestStopFailsPendingWrites(t *testing.T) {
	r := startReplica(t, SequencerConfig{})
	r.Stop()
	if _, err := r.Write(context.Background(), putTxn("a", "1")); !errors.Is(err, ErrStopped) {
		t.Fatalf("write after stop: %v", err)
	}
	if err := r.seq.WaitResolved(context.Background(), 100); err != nil && !errors.Is(err, ErrStopped) {
		t.Fatalf("WaitResolved after stop: %v", err)
	}
}

// TestRevokeLeaseRacingWrites revokes a lease while writers put the same
// keys with and without it: the revocation deletes, at one revision, every
// key that has the lease at that revision, puts with the lease after it
// fail, and no revision is taken by a write that changes nothing.
func TestRevokeLeaseRacingWrites(t *testing.T) {
	r := startReplica(t, SequencerConfig{})
	ctx := context.Background()
	const lease, keys = 7, 100
	r.leases.ids.Store(int64(lease), true)
	put := func(i, lease int) *pb.TxnRequest {
		return &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
			Key: []byte(fmt.Sprintf("k%03d", i)), Value: []byte("v"), Lease: int64(lease),
		}}}}}
	}
	for i := range keys {
		if _, err := r.Write(ctx, put(i, lease)); err != nil {
			t.Fatal(err)
		}
	}
	var (
		wg     sync.WaitGroup
		writes atomic.Int64
		stop   = make(chan struct{})
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i += 8 {
				select {
				case <-stop:
					return
				default:
				}
				_, err := r.Write(ctx, put(i%keys, lease*(i%2))) // half with the lease
				switch {
				case err == nil:
					writes.Add(1)
				case !errors.Is(err, mvcc.ErrLeaseNotFound):
					t.Error(err)
					return
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	r.leases.ids.Delete(int64(lease)) // the meta group drops it first
	resp, err := r.RevokeLease(ctx, lease)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()

	if left, err := r.Shard().LeaseKeys(lease); err != nil || len(left) != 0 {
		t.Fatalf("keys still attached after the revocation: %q (%v)", left, err)
	}
	if want := int64(1 + keys + 1 + writes.Load()); r.Shard().Rev() != want {
		t.Fatalf("shard at revision %d after %d puts and one revocation; want %d", r.Shard().Rev(), keys+writes.Load(), want)
	}
	rev := resp.Header.Revision
	before, err := r.View().Range(ctx, []byte("k"), []byte("l"), mvcc.RangeOptions{Rev: rev - 1})
	if err != nil {
		t.Fatal(err)
	}
	after, err := r.View().Range(ctx, []byte("k"), []byte("l"), mvcc.RangeOptions{Rev: rev})
	if err != nil {
		t.Fatal(err)
	}
	attached := 0
	for _, kv := range before.KVs {
		if kv.Lease == lease {
			attached++
		}
	}
	if attached == 0 || after.Count != before.Count-attached {
		t.Fatalf("revocation at %d: %d keys before with %d attached, %d after", rev, before.Count, attached, after.Count)
	}
	for _, kv := range after.KVs {
		if kv.Lease == lease {
			t.Fatalf("%s keeps the revoked lease", kv.Key)
		}
	}

	// A lease with one key, revoked while a put detaches that key: either
	// the put or the revocation comes first, and the revocation takes a
	// revision only if it deletes the key.
	for round := range 100 {
		id := int64(100 + round)
		r.leases.ids.Store(id, true)
		if _, err := r.Write(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
			Key: []byte("solo"), Value: []byte("v"), Lease: id,
		}}}}}); err != nil {
			t.Fatal(err)
		}
		start := r.Shard().Rev()
		done := make(chan error, 1)
		go func() {
			_, err := r.Write(ctx, putTxn("solo", "detached"))
			done <- err
		}()
		time.Sleep(time.Duration(round%4) * 25 * time.Microsecond) // let the put go ahead, or not
		r.leases.ids.Delete(id)
		_, err := r.RevokeLease(ctx, id)
		revoked := err == nil
		if err != nil && !errors.Is(err, ErrNoWrite) {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		want := start + 1
		if revoked {
			want++
		}
		if got := r.Shard().Rev(); got != want {
			t.Fatalf("round %d: revision %d after a put and a revocation that deleted %v; want %d", round, got, revoked, want)
		}
	}
}
