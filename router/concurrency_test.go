package router_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/internal/testnode"
)

// These tests drive leases through etcd's own client recipes
// (client/v3/concurrency) and etcd's v3lock and v3election services, and
// check what a user of those would: who holds a lock, who leads, which keys
// exist, and the errors etcd returns.

// waitTimeout bounds waits for something that should happen soon (a lease
// expiring, a waiter being woken); the machine may be slow, so it is long.
const waitTimeout = 20 * time.Second

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within %v", what, waitTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// keyCount is how many keys have the prefix.
func keyCount(ctx context.Context, c *clientv3.Client, prefix string) (int64, error) {
	resp, err := c.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Count, nil
}

// waitKeys waits until the prefix holds n keys.
func waitKeys(t *testing.T, c *clientv3.Client, prefix string, n int64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d keys under %q", n, prefix), func() (bool, error) {
		got, err := keyCount(t.Context(), c, prefix)
		return got == n, err
	})
}

// stillBlocked fails the test if done has fired: the call it stands for
// must still be waiting.
func stillBlocked(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s returned (%v) while it should wait", what, err)
	default:
	}
}

// result waits for the outcome of a blocked call.
func result(t *testing.T, done <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(waitTimeout):
		t.Fatalf("%s did not return within %v", what, waitTimeout)
		return nil
	}
}

func newSession(t *testing.T, c *clientv3.Client, opts ...concurrency.SessionOption) *concurrency.Session {
	t.Helper()
	s, err := concurrency.NewSession(c, opts...)
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestSessionLeaseRevokedOnClose: a session's lease exists with its TTL
// while the session lives, carries the keys put with it, and Close revokes
// it with its keys.
func TestSessionLeaseRevokedOnClose(t *testing.T) {
	n := testnode.Start(t)
	c := n.Client(t)
	ctx := t.Context()

	s := newSession(t, c, concurrency.WithTTL(5))
	ttl, err := c.TimeToLive(ctx, s.Lease(), clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	if ttl.TTL <= 0 || ttl.TTL > 5 || ttl.GrantedTTL != 5 || len(ttl.Keys) != 0 {
		t.Fatalf("new session's lease: TTL %d, granted %d, keys %q; want 0 < TTL <= 5, granted 5, no keys", ttl.TTL, ttl.GrantedTTL, ttl.Keys)
	}
	for _, k := range []string{"session/a", "session/b"} {
		if _, err := c.Put(ctx, k, "v", clientv3.WithLease(s.Lease())); err != nil {
			t.Fatal(err)
		}
	}
	ttl, err = c.TimeToLive(ctx, s.Lease(), clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	// etcd lists a lease's keys in no particular order.
	keys := make([]string, len(ttl.Keys))
	for i, k := range ttl.Keys {
		keys[i] = string(k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"session/a", "session/b"}) {
		t.Fatalf("lease keys %q, want session/a and session/b", keys)
	}
	get, err := c.Get(ctx, "session/a")
	if err != nil {
		t.Fatal(err)
	}
	if len(get.Kvs) != 1 || clientv3.LeaseID(get.Kvs[0].Lease) != s.Lease() {
		t.Fatalf("session/a: %v, want one key on lease %x", get.Kvs, s.Lease())
	}

	if err := s.Close(); err != nil {
		t.Fatalf("close session: %v", err)
	}
	select {
	case <-s.Done():
	case <-time.After(waitTimeout):
		t.Fatal("session not done after Close")
	}
	// Close revokes synchronously: the keys are gone when it returns.
	if got, err := keyCount(ctx, c, "session/"); err != nil || got != 0 {
		t.Fatalf("after Close: %d keys under session/ (%v), want 0", got, err)
	}
	ttl, err = c.TimeToLive(ctx, s.Lease())
	if err != nil {
		t.Fatal(err)
	}
	if ttl.TTL != -1 {
		t.Fatalf("revoked lease has TTL %d, want -1", ttl.TTL)
	}
}

// TestSessionExpiresWhenOrphaned: a session's keep-alives keep its lease
// beyond its TTL; once the session is orphaned (keep-alives stop) the lease
// expires and its keys vanish.
func TestSessionExpiresWhenOrphaned(t *testing.T) {
	n := testnode.Start(t)
	c := n.Client(t)
	ctx := t.Context()

	s := newSession(t, c, concurrency.WithTTL(3))
	if _, err := c.Put(ctx, "orphan/k", "v", clientv3.WithLease(s.Lease())); err != nil {
		t.Fatal(err)
	}
	// Outlive the TTL: keep-alives must keep the lease. (Its TTL may read
	// 0: the client renews every TTL/3 on a 500 ms tick, and TimeToLive
	// rounds down, as etcd's does.)
	time.Sleep(4 * time.Second)
	ttl, err := c.TimeToLive(ctx, s.Lease())
	if err != nil {
		t.Fatal(err)
	}
	if ttl.TTL < 0 || ttl.GrantedTTL != 3 {
		t.Fatalf("kept-alive lease has TTL %d (granted %d) after 4s, want >= 0 (granted 3)", ttl.TTL, ttl.GrantedTTL)
	}
	if got, err := keyCount(ctx, c, "orphan/"); err != nil || got != 1 {
		t.Fatalf("kept-alive lease's key: %d keys (%v), want 1", got, err)
	}

	s.Orphan()
	waitKeys(t, c, "orphan/", 0)
	ttl, err = c.TimeToLive(ctx, s.Lease())
	if err != nil {
		t.Fatal(err)
	}
	if ttl.TTL != -1 {
		t.Fatalf("expired lease has TTL %d, want -1", ttl.TTL)
	}
}

// TestMutexLockTryLock: Lock and Unlock, TryLock fails with ErrLocked while
// another session holds the mutex and succeeds after Unlock.
func TestMutexLockTryLock(t *testing.T) {
	n := testnode.Start(t)
	c := n.Client(t)
	ctx := t.Context()
	s1, s2 := newSession(t, c), newSession(t, c)
	m1, m2 := concurrency.NewMutex(s1, "mutex/a"), concurrency.NewMutex(s2, "mutex/a")

	if err := m1.Lock(ctx); err != nil {
		t.Fatalf("lock: %v", err)
	}
	if want := fmt.Sprintf("mutex/a/%x", s1.Lease()); m1.Key() != want {
		t.Fatalf("lock key %q, want %q", m1.Key(), want)
	}
	get, err := c.Get(ctx, m1.Key())
	if err != nil {
		t.Fatal(err)
	}
	if len(get.Kvs) != 1 || clientv3.LeaseID(get.Kvs[0].Lease) != s1.Lease() || get.Kvs[0].CreateRevision != m1.Header().Revision {
		t.Fatalf("lock key %v, want one key on lease %x created at %d", get.Kvs, s1.Lease(), m1.Header().Revision)
	}

	if err := m2.TryLock(ctx); !errors.Is(err, concurrency.ErrLocked) {
		t.Fatalf("TryLock of a held mutex: %v, want %v", err, concurrency.ErrLocked)
	}
	// A failed TryLock leaves no waiter key behind.
	if got, err := keyCount(ctx, c, "mutex/a/"); err != nil || got != 1 {
		t.Fatalf("after a failed TryLock: %d keys (%v), want only the holder's", got, err)
	}
	// The holder's own TryLock succeeds (it already holds the mutex).
	if err := m1.TryLock(ctx); err != nil {
		t.Fatalf("holder's TryLock: %v", err)
	}

	if err := m1.Unlock(ctx); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	if got, err := keyCount(ctx, c, "mutex/a/"); err != nil || got != 0 {
		t.Fatalf("after Unlock: %d keys (%v), want 0", got, err)
	}
	if err := m1.Unlock(ctx); !errors.Is(err, concurrency.ErrLockReleased) {
		t.Fatalf("second Unlock: %v, want %v", err, concurrency.ErrLockReleased)
	}
	if err := m2.TryLock(ctx); err != nil {
		t.Fatalf("TryLock of a free mutex: %v", err)
	}
	if m2.Header().Revision <= m1.Header().Revision {
		t.Fatalf("second holder acquired at revision %d, not after the first (%d)", m2.Header().Revision, m1.Header().Revision)
	}
	if err := m1.TryLock(ctx); !errors.Is(err, concurrency.ErrLocked) {
		t.Fatalf("TryLock while the other session holds it: %v, want %v", err, concurrency.ErrLocked)
	}
	if err := m2.Unlock(ctx); err != nil {
		t.Fatalf("unlock: %v", err)
	}
}

// TestMutexLockWaitsAndCancels: Lock waits while another session holds the
// mutex, returns the context's error when cancelled (removing its waiter
// key), and is granted when the holder unlocks.
func TestMutexLockWaitsAndCancels(t *testing.T) {
	n := testnode.Start(t)
	c := n.Client(t)
	ctx := t.Context()
	s1, s2 := newSession(t, c), newSession(t, c)
	m1, m2 := concurrency.NewMutex(s1, "mutex/b"), concurrency.NewMutex(s2, "mutex/b")
	if err := m1.Lock(ctx); err != nil {
		t.Fatal(err)
	}

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m2.Lock(cctx) }()
	waitKeys(t, c, "mutex/b/", 2) // the waiter's key is in
	stillBlocked(t, done, "Lock of a held mutex")
	cancel()
	if err := result(t, done, "cancelled Lock"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Lock: %v, want %v", err, context.Canceled)
	}
	if got, err := keyCount(ctx, c, "mutex/b/"); err != nil || got != 1 {
		t.Fatalf("after a cancelled Lock: %d keys (%v), want only the holder's", got, err)
	}

	go func() { done <- m2.Lock(ctx) }()
	waitKeys(t, c, "mutex/b/", 2)
	stillBlocked(t, done, "Lock of a held mutex")
	if err := m1.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := result(t, done, "Lock after Unlock"); err != nil {
		t.Fatalf("Lock after the holder unlocked: %v", err)
	}
	if want := fmt.Sprintf("mutex/b/%x", s2.Lease()); m2.Key() != want {
		t.Fatalf("new holder's key %q, want %q", m2.Key(), want)
	}
	if err := m2.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestMutexReleasedOnSessionExpiry: a mutex held by a session whose lease
// expires (its keep-alives stopped) passes to the waiter.
func TestMutexReleasedOnSessionExpiry(t *testing.T) {
	n := testnode.Start(t)
	c := n.Client(t)
	ctx := t.Context()
	holder := newSession(t, c, concurrency.WithTTL(2))
	waiter := newSession(t, c)
	m1, m2 := concurrency.NewMutex(holder, "mutex/c"), concurrency.NewMutex(waiter, "mutex/c")
	if err := m1.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m2.Lock(ctx) }()
	waitKeys(t, c, "mutex/c/", 2)
	stillBlocked(t, done, "Lock of a held mutex")

	holder.Orphan()
	if err := result(t, done, "Lock after the holder's lease expired"); err != nil {
		t.Fatalf("Lock after the holder's lease expired: %v", err)
	}
	get, err := c.Get(ctx, "mutex/c/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(get.Kvs) != 1 || string(get.Kvs[0].Key) != m2.Key() {
		t.Fatalf("after expiry the keys are %v, want only the new holder's %q", get.Kvs, m2.Key())
	}
	other := concurrency.NewMutex(newSession(t, c), "mutex/c")
	if err := other.TryLock(ctx); !errors.Is(err, concurrency.ErrLocked) {
		t.Fatalf("TryLock while the waiter holds it: %v, want %v", err, concurrency.ErrLocked)
	}
}

// TestMutexContentionFencing: several clients, each with its own session,
// take the same mutex in turns. While holding it each checks that nobody
// else does, and increments a counter with a write fenced on still owning
// the mutex. Every fenced write must apply, the counter must count every
// acquisition, and the revisions at which the mutex was acquired must
// increase strictly in acquisition order. A write fenced on a released
// mutex must not apply.
func TestMutexContentionFencing(t *testing.T) {
	const (
		clients = 10
		rounds  = 5
		lockPfx = "fence/lock"
		counter = "fence/counter"
	)
	n := testnode.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	var (
		holders atomic.Int32
		mu      sync.Mutex
		revs    []int64 // m.Header().Revision of each acquisition, in order
		wg      sync.WaitGroup
		errc    = make(chan error, clients)
	)
	acquireRound := func(c *clientv3.Client, m *concurrency.Mutex) error {
		if err := m.Lock(ctx); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if !holders.CompareAndSwap(0, 1) {
			return errors.New("two holders of the mutex at once")
		}
		mu.Lock()
		revs = append(revs, m.Header().Revision)
		mu.Unlock()
		get, err := c.Get(ctx, counter)
		if err != nil {
			return err
		}
		next := 1
		if len(get.Kvs) == 1 {
			v, err := strconv.Atoi(string(get.Kvs[0].Value))
			if err != nil {
				return err
			}
			next = v + 1
		}
		txn, err := c.Txn(ctx).If(m.IsOwner()).Then(clientv3.OpPut(counter, strconv.Itoa(next))).Commit()
		if err != nil {
			return fmt.Errorf("fenced txn: %w", err)
		}
		if !txn.Succeeded {
			return fmt.Errorf("fenced txn of holder %q failed", m.Key())
		}
		if !holders.CompareAndSwap(1, 0) {
			return errors.New("two holders of the mutex at once")
		}
		if err := m.Unlock(ctx); err != nil {
			return fmt.Errorf("unlock: %w", err)
		}
		return nil
	}
	for range clients {
		c := n.Client(t)
		s := newSession(t, c)
		m := concurrency.NewMutex(s, lockPfx)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				if err := acquireRound(c, m); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}

	c := n.Client(t)
	get, err := c.Get(ctx, counter)
	if err != nil {
		t.Fatal(err)
	}
	if len(get.Kvs) != 1 || string(get.Kvs[0].Value) != strconv.Itoa(clients*rounds) {
		t.Fatalf("counter %v, want %d", get.Kvs, clients*rounds)
	}
	if len(revs) != clients*rounds {
		t.Fatalf("%d acquisitions recorded, want %d", len(revs), clients*rounds)
	}
	for i := 1; i < len(revs); i++ {
		if revs[i] <= revs[i-1] {
			t.Fatalf("acquisition %d at revision %d, not after acquisition %d at %d (all: %v)", i, revs[i], i-1, revs[i-1], revs)
		}
	}

	// A write fenced on a mutex its holder has released does not apply.
	m := concurrency.NewMutex(newSession(t, c), lockPfx)
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	stale := m.IsOwner()
	if err := m.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	txn, err := c.Txn(ctx).If(stale).Then(clientv3.OpPut(counter, "stale")).Commit()
	if err != nil {
		t.Fatal(err)
	}
	if txn.Succeeded {
		t.Fatal("a write fenced on a released mutex applied")
	}
}

// TestElectionCampaignProclaimResign: Leader of an empty election is
// ErrElectionNoLeader; the first candidate leads, proclaims values that an
// observer sees in order; a second candidate waits until the leader
// resigns, then leads.
func TestElectionCampaignProclaimResign(t *testing.T) {
	n := testnode.Start(t)
	c := n.Client(t)
	ctx := t.Context()
	s1, s2, s3 := newSession(t, c), newSession(t, c), newSession(t, c)
	e1 := concurrency.NewElection(s1, "elect/a")
	e2 := concurrency.NewElection(s2, "elect/a")
	watcher := concurrency.NewElection(s3, "elect/a")

	if _, err := watcher.Leader(ctx); !errors.Is(err, concurrency.ErrElectionNoLeader) {
		t.Fatalf("Leader of an empty election: %v, want %v", err, concurrency.ErrElectionNoLeader)
	}
	if err := e1.Proclaim(ctx, "x"); !errors.Is(err, concurrency.ErrElectionNotLeader) {
		t.Fatalf("Proclaim before Campaign: %v, want %v", err, concurrency.ErrElectionNotLeader)
	}

	octx, ocancel := context.WithCancel(ctx)
	defer ocancel()
	observed := watcher.Observe(octx)
	if err := e1.Campaign(ctx, "a1"); err != nil {
		t.Fatalf("campaign: %v", err)
	}
	if want := fmt.Sprintf("elect/a/%x", s1.Lease()); e1.Key() != want {
		t.Fatalf("leader key %q, want %q", e1.Key(), want)
	}
	checkLeader := func(key, value string) {
		t.Helper()
		resp, err := watcher.Leader(ctx)
		if err != nil {
			t.Fatalf("leader: %v", err)
		}
		if kv := resp.Kvs[0]; string(kv.Key) != key || string(kv.Value) != value {
			t.Fatalf("leader %q=%q, want %q=%q", kv.Key, kv.Value, key, value)
		}
	}
	key1 := e1.Key()
	checkLeader(key1, "a1")

	if err := e1.Proclaim(ctx, "a2"); err != nil {
		t.Fatal(err)
	}
	if err := e1.Proclaim(ctx, "a3"); err != nil {
		t.Fatal(err)
	}
	checkLeader(key1, "a3")

	// A second candidate waits while e1 leads.
	done := make(chan error, 1)
	go func() { done <- e2.Campaign(ctx, "b1") }()
	waitKeys(t, c, "elect/a/", 2)
	stillBlocked(t, done, "Campaign of a second candidate")
	checkLeader(key1, "a3")

	if err := e1.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if err := result(t, done, "Campaign after the leader resigned"); err != nil {
		t.Fatalf("Campaign after the leader resigned: %v", err)
	}
	checkLeader(e2.Key(), "b1")
	if err := e1.Proclaim(ctx, "a4"); !errors.Is(err, concurrency.ErrElectionNotLeader) {
		t.Fatalf("Proclaim after Resign: %v, want %v", err, concurrency.ErrElectionNotLeader)
	}

	// The observer saw every value, in order, each from its leader's key.
	want := []struct{ key, value string }{{key1, "a1"}, {key1, "a2"}, {key1, "a3"}, {e2.Key(), "b1"}}
	var lastRev int64
	for i, w := range want {
		select {
		case resp, ok := <-observed:
			if !ok {
				t.Fatalf("observe channel closed after %d values", i)
			}
			kv := resp.Kvs[0]
			if string(kv.Key) != w.key || string(kv.Value) != w.value {
				t.Fatalf("observed #%d: %q=%q, want %q=%q", i, kv.Key, kv.Value, w.key, w.value)
			}
			if kv.ModRevision <= lastRev {
				t.Fatalf("observed #%d at revision %d, not after %d", i, kv.ModRevision, lastRev)
			}
			lastRev = kv.ModRevision
		case <-time.After(waitTimeout):
			t.Fatalf("observed %d values, want %d", i, len(want))
		}
	}
	if err := e2.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := watcher.Leader(ctx); !errors.Is(err, concurrency.ErrElectionNoLeader) {
		t.Fatalf("Leader after every candidate resigned: %v, want %v", err, concurrency.ErrElectionNoLeader)
	}
}

// TestElectionLeaderSessionCloses: when the leader's session closes (its
// lease is revoked) leadership moves to the next candidate, in campaign
// order.
func TestElectionLeaderSessionCloses(t *testing.T) {
	n := testnode.Start(t)
	c := n.Client(t)
	ctx := t.Context()
	s1, s2, s3 := newSession(t, c), newSession(t, c), newSession(t, c)
	e1 := concurrency.NewElection(s1, "elect/b")
	e2 := concurrency.NewElection(s2, "elect/b")
	e3 := concurrency.NewElection(s3, "elect/b")
	if err := e1.Campaign(ctx, "one"); err != nil {
		t.Fatal(err)
	}
	done2, done3 := make(chan error, 1), make(chan error, 1)
	go func() { done2 <- e2.Campaign(ctx, "two") }()
	waitKeys(t, c, "elect/b/", 2)
	go func() { done3 <- e3.Campaign(ctx, "three") }()
	waitKeys(t, c, "elect/b/", 3)
	stillBlocked(t, done2, "second candidate's Campaign")
	stillBlocked(t, done3, "third candidate's Campaign")

	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := result(t, done2, "second candidate's Campaign"); err != nil {
		t.Fatal(err)
	}
	stillBlocked(t, done3, "third candidate's Campaign")
	resp, err := e3.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if kv := resp.Kvs[0]; string(kv.Key) != e2.Key() || string(kv.Value) != "two" {
		t.Fatalf("leader after the first leader's session closed: %q=%q, want %q=two", kv.Key, kv.Value, e2.Key())
	}

	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := result(t, done3, "third candidate's Campaign"); err != nil {
		t.Fatal(err)
	}
	resp, err = e3.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if kv := resp.Kvs[0]; string(kv.Key) != e3.Key() || string(kv.Value) != "three" {
		t.Fatalf("leader after the second leader's session closed: %q=%q, want %q=three", kv.Key, kv.Value, e3.Key())
	}
}

var stmIsolations = []struct {
	name  string
	level concurrency.Isolation
}{
	{"SerializableSnapshot", concurrency.SerializableSnapshot},
	{"Serializable", concurrency.Serializable},
	{"RepeatableReads", concurrency.RepeatableReads},
	{"ReadCommitted", concurrency.ReadCommitted},
}

// TestSTMBankTransfers runs concurrent transfers between accounts in STM
// transactions from several clients. Under every isolation level but
// ReadCommitted the money is conserved: at every revision a reader sees,
// and at the end, the balances sum to the start and none is negative.
// ReadCommitted guarantees neither; there each transaction must apply.
func TestSTMBankTransfers(t *testing.T) {
	const (
		accounts  = 5
		start     = 100
		workers   = 4
		transfers = 20
	)
	n := testnode.Start(t)
	for _, iso := range stmIsolations {
		t.Run(iso.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			pfx := "bank/" + iso.name + "/"
			account := func(i int) string { return fmt.Sprintf("%s%d", pfx, i) }
			c := n.Client(t)
			for i := range accounts {
				if _, err := c.Put(ctx, account(i), strconv.Itoa(start)); err != nil {
					t.Fatal(err)
				}
			}
			conserved := iso.level != concurrency.ReadCommitted
			// sum reads every account at one revision.
			sum := func() (int, error) {
				resp, err := c.Get(ctx, pfx, clientv3.WithPrefix())
				if err != nil {
					return 0, err
				}
				total := 0
				for _, kv := range resp.Kvs {
					v, err := strconv.Atoi(string(kv.Value))
					if err != nil {
						return 0, err
					}
					if v < 0 && conserved {
						return 0, fmt.Errorf("%s has balance %d at revision %d", kv.Key, v, resp.Header.Revision)
					}
					total += v
				}
				if len(resp.Kvs) != accounts {
					return 0, fmt.Errorf("%d accounts at revision %d, want %d", len(resp.Kvs), resp.Header.Revision, accounts)
				}
				return total, nil
			}

			var wg sync.WaitGroup
			errc := make(chan error, workers+1)
			stopReader := make(chan struct{})
			readerDone := make(chan struct{})
			go func() {
				defer close(readerDone)
				for {
					select {
					case <-stopReader:
						return
					default:
					}
					total, err := sum()
					if err == nil && conserved && total != accounts*start {
						err = fmt.Errorf("balances sum to %d mid-run, want %d", total, accounts*start)
					}
					if err != nil {
						errc <- err
						return
					}
				}
			}()
			for w := range workers {
				wc := n.Client(t)
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 1))
					for range transfers {
						from := rng.IntN(accounts)
						to := (from + 1 + rng.IntN(accounts-1)) % accounts
						want := 1 + rng.IntN(30)
						resp, err := concurrency.NewSTM(wc, func(s concurrency.STM) error {
							fb, err := strconv.Atoi(s.Get(account(from)))
							if err != nil {
								return err
							}
							tb, err := strconv.Atoi(s.Get(account(to)))
							if err != nil {
								return err
							}
							amount := min(want, fb)
							s.Put(account(from), strconv.Itoa(fb-amount))
							s.Put(account(to), strconv.Itoa(tb+amount))
							return nil
						}, concurrency.WithIsolation(iso.level), concurrency.WithAbortContext(ctx))
						if err != nil {
							errc <- fmt.Errorf("transfer: %w", err)
							return
						}
						if !resp.Succeeded {
							errc <- errors.New("NewSTM returned a transaction that did not apply")
							return
						}
					}
				}()
			}
			wg.Wait()
			close(stopReader)
			<-readerDone
			close(errc)
			for err := range errc {
				t.Fatal(err)
			}
			total, err := sum()
			if err != nil {
				t.Fatal(err)
			}
			if conserved && total != accounts*start {
				t.Fatalf("balances sum to %d after the transfers, want %d", total, accounts*start)
			}
		})
	}
}

// TestSTMConflictRetries: a key an STM transaction read is changed before
// it commits. Every isolation level but ReadCommitted retries the
// transaction, so the outside write is not lost; ReadCommitted commits on
// the stale read (a lost update, as in etcd). Sequential increments
// through each level count exactly.
func TestSTMConflictRetries(t *testing.T) {
	n := testnode.Start(t)
	c := n.Client(t)
	for _, iso := range stmIsolations {
		t.Run(iso.name, func(t *testing.T) {
			ctx := t.Context()
			key := "stm/" + iso.name
			if _, err := c.Put(ctx, key, "0"); err != nil {
				t.Fatal(err)
			}
			incr := func(s concurrency.STM) error {
				v, err := strconv.Atoi(s.Get(key))
				if err != nil {
					return err
				}
				s.Put(key, strconv.Itoa(v+1))
				return nil
			}
			for range 10 {
				if _, err := concurrency.NewSTM(c, incr, concurrency.WithIsolation(iso.level)); err != nil {
					t.Fatal(err)
				}
			}
			if got := getValue(t, c, key); got != "10" {
				t.Fatalf("after 10 increments %s = %q, want 10", key, got)
			}

			calls := 0
			_, err := concurrency.NewSTM(c, func(s concurrency.STM) error {
				calls++
				v, err := strconv.Atoi(s.Get(key))
				if err != nil {
					return err
				}
				if calls == 1 {
					// Another client writes the key after this read.
					if _, err := c.Put(ctx, key, "100"); err != nil {
						return err
					}
				}
				s.Put(key, strconv.Itoa(v+1))
				return nil
			}, concurrency.WithIsolation(iso.level))
			if err != nil {
				t.Fatal(err)
			}
			wantCalls, wantValue := 2, "101"
			if iso.level == concurrency.ReadCommitted {
				wantCalls, wantValue = 1, "11"
			}
			if calls != wantCalls {
				t.Fatalf("apply ran %d times, want %d", calls, wantCalls)
			}
			if got := getValue(t, c, key); got != wantValue {
				t.Fatalf("%s = %q, want %q", key, got, wantValue)
			}
		})
	}
}

func getValue(t *testing.T, c *clientv3.Client, key string) string {
	t.Helper()
	resp, err := c.Get(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("%s: %d keys", key, len(resp.Kvs))
	}
	return string(resp.Kvs[0].Value)
}

// TestV3lockService drives etcd's Lock service: Lock with a lease returns a
// key under the name on that lease, a second Lock waits until Unlock, and
// Lock with a lease that does not exist fails as on etcd.
func TestV3lockService(t *testing.T) {
	n := testnode.Start(t)
	c := n.Client(t)
	ctx := t.Context()
	lc := v3lockpb.NewLockClient(c.ActiveConnection())

	l1, err := c.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	r1, err := lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("svc-lock"), Lease: int64(l1.ID)})
	if err != nil {
		t.Fatalf("lock: %v", err)
	}
	if want := fmt.Sprintf("svc-lock/%x", int64(l1.ID)); string(r1.Key) != want {
		t.Fatalf("lock key %q, want %q", r1.Key, want)
	}
	get, err := c.Get(ctx, string(r1.Key))
	if err != nil {
		t.Fatal(err)
	}
	if len(get.Kvs) != 1 || clientv3.LeaseID(get.Kvs[0].Lease) != l1.ID || get.Kvs[0].CreateRevision != r1.Header.Revision {
		t.Fatalf("lock key %v, want one key on lease %x created at %d", get.Kvs, l1.ID, r1.Header.Revision)
	}

	l2, err := c.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	type lockResult struct {
		resp *v3lockpb.LockResponse
		err  error
	}
	second := make(chan lockResult, 1)
	go func() {
		r, err := lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("svc-lock"), Lease: int64(l2.ID)})
		second <- lockResult{r, err}
	}()
	waitKeys(t, c, "svc-lock/", 2)
	select {
	case r := <-second:
		t.Fatalf("second Lock returned (%v, %v) while the first holds the lock", r.resp, r.err)
	default:
	}
	ur, err := lc.Unlock(ctx, &v3lockpb.UnlockRequest{Key: r1.Key})
	if err != nil {
		t.Fatalf("unlock: %v", err)
	}
	var r2 lockResult
	select {
	case r2 = <-second:
	case <-time.After(waitTimeout):
		t.Fatal("second Lock not granted after Unlock")
	}
	if r2.err != nil {
		t.Fatalf("second lock: %v", r2.err)
	}
	if want := fmt.Sprintf("svc-lock/%x", int64(l2.ID)); string(r2.resp.Key) != want {
		t.Fatalf("second lock key %q, want %q", r2.resp.Key, want)
	}
	if r2.resp.Header.Revision < ur.Header.Revision {
		t.Fatalf("second lock granted at revision %d, before the unlock at %d", r2.resp.Header.Revision, ur.Header.Revision)
	}
	// Revoking the holder's lease releases the lock too.
	if _, err := c.Revoke(ctx, l2.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := keyCount(ctx, c, "svc-lock/"); err != nil || got != 0 {
		t.Fatalf("after revoking the holder's lease: %d keys (%v), want 0", got, err)
	}

	// etcd's lock service returns the Put's error as is: gRPC code Unknown.
	_, err = lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("svc-lock"), Lease: 12345})
	if s, _ := status.FromError(err); s.Code() != codes.Unknown || s.Message() != "etcdserver: requested lease not found" {
		t.Fatalf("Lock with a missing lease: %v, want code Unknown, %q", err, "etcdserver: requested lease not found")
	}
	if got, err := keyCount(ctx, c, "svc-lock/"); err != nil || got != 0 {
		t.Fatalf("after a failed Lock: %d keys (%v), want 0", got, err)
	}
}

// TestV3electionService drives etcd's Election service: Leader with no
// leader fails as on etcd; Campaign, Leader, Observe, Proclaim and Resign
// work as with the client's election recipe.
func TestV3electionService(t *testing.T) {
	n := testnode.Start(t)
	c := n.Client(t)
	ctx := t.Context()
	ec := v3electionpb.NewElectionClient(c.ActiveConnection())
	name := []byte("svc-elect")

	wantErr := func(err error, msg string) {
		t.Helper()
		if s, _ := status.FromError(err); s.Code() != codes.Unknown || s.Message() != msg {
			t.Fatalf("got %v, want code Unknown, %q", err, msg)
		}
	}
	_, err := ec.Leader(ctx, &v3electionpb.LeaderRequest{Name: name})
	wantErr(err, "election: no leader")

	l1, err := c.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	cr, err := ec.Campaign(ctx, &v3electionpb.CampaignRequest{Name: name, Lease: int64(l1.ID), Value: []byte("v1")})
	if err != nil {
		t.Fatalf("campaign: %v", err)
	}
	leader := cr.Leader
	if want := fmt.Sprintf("svc-elect/%x", int64(l1.ID)); string(leader.Name) != "svc-elect" || string(leader.Key) != want ||
		leader.Lease != int64(l1.ID) || leader.Rev != cr.Header.Revision {
		t.Fatalf("campaign's leader %v, want key %q on lease %x at revision %d", leader, want, l1.ID, cr.Header.Revision)
	}
	checkLeader := func(key, value string) {
		t.Helper()
		lr, err := ec.Leader(ctx, &v3electionpb.LeaderRequest{Name: name})
		if err != nil {
			t.Fatalf("leader: %v", err)
		}
		if string(lr.Kv.Key) != key || string(lr.Kv.Value) != value {
			t.Fatalf("leader %q=%q, want %q=%q", lr.Kv.Key, lr.Kv.Value, key, value)
		}
	}
	checkLeader(string(leader.Key), "v1")

	octx, ocancel := context.WithCancel(ctx)
	defer ocancel()
	obs, err := ec.Observe(octx, &v3electionpb.LeaderRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	observe := func(key, value string) {
		t.Helper()
		r, err := obs.Recv()
		if err != nil {
			t.Fatalf("observe: %v", err)
		}
		if string(r.Kv.Key) != key || string(r.Kv.Value) != value {
			t.Fatalf("observed %q=%q, want %q=%q", r.Kv.Key, r.Kv.Value, key, value)
		}
	}
	observe(string(leader.Key), "v1")
	if _, err := ec.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: leader, Value: []byte("v2")}); err != nil {
		t.Fatalf("proclaim: %v", err)
	}
	observe(string(leader.Key), "v2")
	checkLeader(string(leader.Key), "v2")

	l2, err := c.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	type campaignResult struct {
		resp *v3electionpb.CampaignResponse
		err  error
	}
	second := make(chan campaignResult, 1)
	go func() {
		r, err := ec.Campaign(ctx, &v3electionpb.CampaignRequest{Name: name, Lease: int64(l2.ID), Value: []byte("w1")})
		second <- campaignResult{r, err}
	}()
	waitKeys(t, c, "svc-elect/", 2)
	select {
	case r := <-second:
		t.Fatalf("second Campaign returned (%v, %v) while the first leads", r.resp, r.err)
	default:
	}
	if _, err := ec.Resign(ctx, &v3electionpb.ResignRequest{Leader: leader}); err != nil {
		t.Fatalf("resign: %v", err)
	}
	var r2 campaignResult
	select {
	case r2 = <-second:
	case <-time.After(waitTimeout):
		t.Fatal("second Campaign not elected after Resign")
	}
	if r2.err != nil {
		t.Fatalf("second campaign: %v", r2.err)
	}
	if want := fmt.Sprintf("svc-elect/%x", int64(l2.ID)); string(r2.resp.Leader.Key) != want {
		t.Fatalf("second leader key %q, want %q", r2.resp.Leader.Key, want)
	}
	checkLeader(string(r2.resp.Leader.Key), "w1")
	observe(string(r2.resp.Leader.Key), "w1")

	// The resigned leader can no longer proclaim.
	_, err = ec.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: leader, Value: []byte("v3")})
	wantErr(err, "election: not leader")
	_, err = ec.Resign(ctx, &v3electionpb.ResignRequest{})
	wantErr(err, `"leader" field must be provided`)

	if _, err := ec.Resign(ctx, &v3electionpb.ResignRequest{Leader: r2.resp.Leader}); err != nil {
		t.Fatal(err)
	}
	_, err = ec.Leader(ctx, &v3electionpb.LeaderRequest{Name: name})
	wantErr(err, "election: no leader")
	if got, err := keyCount(ctx, c, "svc-elect/"); err != nil || got != 0 {
		t.Fatalf("after both resigned: %d keys (%v), want 0", got, err)
	}
}
