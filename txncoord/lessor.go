package txncoord

import (
	"cmp"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/basaltdb/basalt/internal/combine"
	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/proto/basaltpb"
)

// MaxLeaseTTL is etcd's largest lease TTL, in seconds.
const MaxLeaseTTL = 9000000000

// Errors of the lessor.
var (
	ErrLeaseTTLTooLarge = errors.New("txncoord: lease TTL too large")
	// ErrLessorNotReady is returned by a node that does not run the lessor
	// (it does not lead the meta group).
	ErrLessorNotReady = errors.New("txncoord: lessor not ready")
)

// LeaseTable is the meta group's lease table as applied on this node.
type LeaseTable interface {
	Lease(id int64) *basaltpb.Lease
	Leases() []*basaltpb.Lease
}

// LessorConfig configures a Lessor.
type LessorConfig struct {
	// MinTTL is the smallest TTL granted, in seconds (etcd derives it from
	// the election timeout).
	MinTTL int64
	// CheckpointInterval is how often the remaining TTLs are recorded in
	// the meta group.
	CheckpointInterval time.Duration
	// ExpiryInterval is how often expired leases are looked for.
	ExpiryInterval time.Duration
	// OrphanInterval is how often keys left attached to leases that no
	// longer exist are looked for.
	OrphanInterval time.Duration
	Logger         *zap.Logger
}

func (c *LessorConfig) setDefaults() {
	if c.MinTTL <= 0 {
		c.MinTTL = 2
	}
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = 5 * time.Second
	}
	if c.OrphanInterval <= 0 {
		c.OrphanInterval = time.Minute
	}
	if c.ExpiryInterval <= 0 {
		c.ExpiryInterval = 250 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// MinLeaseTTL is etcd's minimum lease TTL for Raft timings: one and a half
// election timeouts, in whole ticks, rounded up to seconds.
func MinLeaseTTL(heartbeat, election time.Duration) int64 {
	if heartbeat <= 0 {
		return 1
	}
	ticks := int64(election / heartbeat)
	d := time.Duration(3*ticks/2) * heartbeat
	return int64(math.Ceil(d.Seconds()))
}

// Lessor runs leases where the meta group's leader is (DESIGN §8): it
// grants and revokes through the meta group, keeps every lease's expiry in
// memory, renews on keep-alive, revokes expired leases (their keys first
// become unattachable, then are deleted at one revision), and records the
// remaining TTLs in the meta group so that a new lessor (a restart, a new
// leader) neither renews them in full nor expires them early.
type Lessor struct {
	cfg   LessorConfig
	meta  MetaGroup
	table LeaseTable
	coord *Coordinator

	// resets clears, in batches, the recorded remaining TTL of renewed
	// leases: after a renewal the whole TTL is left.
	resets *combine.Combiner[*leaseReset]

	mu       sync.Mutex
	primary  bool
	expiry   map[int64]time.Time
	revoking map[int64]bool
	stopc    chan struct{}
	wg       sync.WaitGroup
}

type leaseReset struct {
	id   int64
	err  error
	done chan struct{}
}

// NewLessor returns a lessor; it serves after Promote.
func NewLessor(cfg LessorConfig, meta MetaGroup, table LeaseTable, coord *Coordinator) *Lessor {
	cfg.setDefaults()
	l := &Lessor{cfg: cfg, meta: meta, table: table, coord: coord}
	l.resets = combine.New(l.serveResets)
	return l
}

// Promote starts the lessor on the meta group's new leader: every lease
// expires after its recorded remaining TTL (or its whole TTL), and keys
// left attached to leases that no longer exist (a revocation interrupted
// after the meta group dropped the lease) are deleted.
func (l *Lessor) Promote(ctx context.Context) error {
	if err := l.meta.ConfirmLeader(ctx); err != nil {
		return err
	}
	now := time.Now()
	expiry := make(map[int64]time.Time)
	for _, ls := range l.table.Leases() {
		left := time.Duration(ls.Ttl) * time.Second
		if ls.RemainingMs > 0 {
			left = time.Duration(ls.RemainingMs) * time.Millisecond
		}
		expiry[ls.Id] = now.Add(left)
	}
	l.mu.Lock()
	if l.primary {
		l.mu.Unlock()
		return nil
	}
	l.primary, l.expiry, l.revoking, l.stopc = true, expiry, make(map[int64]bool), make(chan struct{})
	l.wg.Add(3)
	go l.every(l.cfg.ExpiryInterval, l.stopc, l.revokeExpired)
	go l.every(l.cfg.CheckpointInterval, l.stopc, l.checkpointNow)
	go l.every(l.cfg.OrphanInterval, l.stopc, l.sweepOrphans)
	l.mu.Unlock()
	return l.revokeOrphans(ctx)
}

// Demote stops the lessor: this node no longer leads the meta group.
func (l *Lessor) Demote() {
	l.mu.Lock()
	if !l.primary {
		l.mu.Unlock()
		return
	}
	l.primary = false
	close(l.stopc)
	l.mu.Unlock()
	l.wg.Wait()
}

// Close stops the lessor of a node that shuts down. A lessor that still
// runs records the remaining TTLs a last time, so that a restart continues
// every lease where it was.
func (l *Lessor) Close() {
	if l.isPrimary() {
		if err := l.checkpoint(); err != nil {
			l.cfg.Logger.Warn("final-lease-checkpoint", zap.Error(err))
		}
	}
	l.Demote()
}

// revokeOrphans deletes the keys of leases that exist in the data shards'
// lease indexes but not in the meta group, except those of leases being
// revoked.
func (l *Lessor) revokeOrphans(ctx context.Context) error {
	ids, err := l.coord.LeaseIDs()
	if err != nil || len(ids) == 0 {
		return err
	}
	// A key the scan saw was written after its lease's grant committed.
	// Still leading, with the meta replica caught up after the scan, the
	// table has every such lease that was not revoked since.
	if err := l.meta.ConfirmLeader(ctx); err != nil {
		return err
	}
	for _, id := range ids {
		if l.table.Lease(id) != nil {
			continue
		}
		l.mu.Lock()
		busy := l.revoking[id]
		l.revoking[id] = true
		l.mu.Unlock()
		if busy {
			continue
		}
		err := l.coord.RevokeLeaseKeys(ctx, id)
		l.mu.Lock()
		delete(l.revoking, id)
		l.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// sweepOrphans runs revokeOrphans now and then. A revocation deletes the
// keys attached to the lease when it runs; a transaction across shards
// that checked the lease before can still commit keys attached to it
// afterwards (on a shard it had locked), and only this finds them.
func (l *Lessor) sweepOrphans() {
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.OrphanInterval)
	defer cancel()
	if err := l.revokeOrphans(ctx); err != nil {
		l.cfg.Logger.Warn("revoke-orphaned-lease-keys", zap.Error(err))
	}
}

func (l *Lessor) isPrimary() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.primary
}

// Grant creates a lease: id 0 picks one. It returns the id and the granted
// TTL (at least the minimum TTL).
func (l *Lessor) Grant(ctx context.Context, id, ttl int64) (int64, int64, error) {
	if !l.isPrimary() {
		return 0, 0, ErrLessorNotReady
	}
	if ttl > MaxLeaseTTL {
		return 0, 0, ErrLeaseTTLTooLarge
	}
	ttl = max(ttl, l.cfg.MinTTL)
	for id == 0 {
		// Positive ids, as etcd's.
		if c := rand.Int64() & math.MaxInt64; c != 0 && l.table.Lease(c) == nil {
			id = c
		}
	}
	cmd := &basaltpb.MetaCommand{Command: &basaltpb.MetaCommand_LeaseGrant{LeaseGrant: &basaltpb.LeaseGrant{Id: id, Ttl: ttl}}}
	if err := l.meta.Propose(ctx, cmd); err != nil {
		return 0, 0, err
	}
	l.mu.Lock()
	if l.primary {
		l.expiry[id] = time.Now().Add(time.Duration(ttl) * time.Second)
	}
	l.mu.Unlock()
	return id, ttl, nil
}

// Revoke drops a lease and deletes its keys at one revision: first the meta
// group drops it (puts with it fail from then on), then the shards delete
// the keys attached to it, after every put with it sequenced before.
func (l *Lessor) Revoke(ctx context.Context, id int64) error {
	if !l.isPrimary() {
		return ErrLessorNotReady
	}
	cmd := &basaltpb.MetaCommand{Command: &basaltpb.MetaCommand_LeaseRevoke{LeaseRevoke: &basaltpb.LeaseRevoke{Id: id}}}
	if err := l.meta.Propose(ctx, cmd); err != nil {
		return err
	}
	l.mu.Lock()
	delete(l.expiry, id)
	l.mu.Unlock()
	return l.coord.RevokeLeaseKeys(ctx, id)
}

// Renew restarts a lease's TTL and returns it; an expired lease is as good
// as gone.
func (l *Lessor) Renew(ctx context.Context, id int64) (int64, error) {
	if !l.isPrimary() {
		return 0, ErrLessorNotReady
	}
	ls := l.table.Lease(id)
	l.mu.Lock()
	exp, ok := l.expiry[id]
	l.mu.Unlock()
	if ls == nil || !ok || time.Now().After(exp) {
		return 0, mvcc.ErrLeaseNotFound
	}
	if ls.RemainingMs > 0 {
		// A recorded remaining TTL would outlive this renewal across a
		// restart and expire the lease early: clear it first, as etcd does.
		r := &leaseReset{id: id, done: make(chan struct{})}
		l.resets.Submit(r)
		select {
		case <-r.done:
			if r.err != nil {
				return 0, r.err
			}
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.expiry[id]; !ok {
		return 0, mvcc.ErrLeaseNotFound
	}
	l.expiry[id] = time.Now().Add(time.Duration(ls.Ttl) * time.Second)
	return ls.Ttl, nil
}

func (l *Lessor) serveResets(batch []*leaseReset) {
	cp := &basaltpb.LeaseCheckpoint{Leases: make([]*basaltpb.Lease, len(batch))}
	for i, r := range batch {
		cp.Leases[i] = &basaltpb.Lease{Id: r.id}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := l.meta.Propose(ctx, &basaltpb.MetaCommand{Command: &basaltpb.MetaCommand_LeaseCheckpoint{LeaseCheckpoint: cp}})
	cancel()
	for _, r := range batch {
		r.err = err
		close(r.done)
	}
}

// LeaseInfo is what TimeToLive reports.
type LeaseInfo struct {
	ID         int64
	TTL        int64 // remaining seconds
	GrantedTTL int64
	Keys       [][]byte
}

// TimeToLive reports a lease's remaining and granted TTL, and its keys
// when asked.
func (l *Lessor) TimeToLive(ctx context.Context, id int64, keys bool) (*LeaseInfo, error) {
	if !l.isPrimary() {
		return nil, ErrLessorNotReady
	}
	ls := l.table.Lease(id)
	l.mu.Lock()
	exp, ok := l.expiry[id]
	l.mu.Unlock()
	if ls == nil || !ok {
		return nil, mvcc.ErrLeaseNotFound
	}
	info := &LeaseInfo{ID: id, TTL: int64(time.Until(exp).Seconds()), GrantedTTL: ls.Ttl}
	if keys {
		k, err := l.coord.LeaseKeys(ctx, id)
		if err != nil {
			return nil, err
		}
		info.Keys = k
	}
	return info, nil
}

// Leases returns the ids of all leases, soonest to expire first (etcd's
// order).
func (l *Lessor) Leases() ([]int64, error) {
	if !l.isPrimary() {
		return nil, ErrLessorNotReady
	}
	l.mu.Lock()
	ids := make([]int64, 0, len(l.expiry))
	for id := range l.expiry {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b int64) int {
		if c := l.expiry[a].Compare(l.expiry[b]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	l.mu.Unlock()
	return ids, nil
}

// every calls fn every interval until stopc closes.
func (l *Lessor) every(interval time.Duration, stopc chan struct{}, fn func()) {
	defer l.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stopc:
			return
		case <-t.C:
			fn()
		}
	}
}

// revokeExpired revokes the leases that expired, lowest id first.
func (l *Lessor) revokeExpired() {
	now := time.Now()
	var expired []int64
	l.mu.Lock()
	for id, exp := range l.expiry {
		if now.After(exp) && !l.revoking[id] {
			expired = append(expired, id)
			l.revoking[id] = true
		}
	}
	l.mu.Unlock()
	slices.Sort(expired)
	for _, id := range expired {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := l.Revoke(ctx, id)
		cancel()
		l.mu.Lock()
		delete(l.revoking, id)
		l.mu.Unlock()
		if err != nil && !errors.Is(err, mvcc.ErrLeaseNotFound) {
			l.cfg.Logger.Warn("revoke-expired-lease", zap.Int64("lease-id", id), zap.Error(err))
		}
	}
}

// checkpointNow records the remaining TTLs, as the checkpoint interval
// asks.
func (l *Lessor) checkpointNow() {
	if err := l.checkpoint(); err != nil {
		l.cfg.Logger.Warn("lease-checkpoint", zap.Error(err))
	}
}

// checkpoint records the remaining TTL of every lease in the meta group,
// in proposals of at most 1,000 leases.
func (l *Lessor) checkpoint() error {
	now := time.Now()
	l.mu.Lock()
	leases := make([]*basaltpb.Lease, 0, len(l.expiry))
	for id, exp := range l.expiry {
		leases = append(leases, &basaltpb.Lease{Id: id, RemainingMs: max(exp.Sub(now).Milliseconds(), 1)})
	}
	l.mu.Unlock()
	for len(leases) > 0 {
		n := min(len(leases), 1000)
		cmd := &basaltpb.MetaCommand{Command: &basaltpb.MetaCommand_LeaseCheckpoint{
			LeaseCheckpoint: &basaltpb.LeaseCheckpoint{Leases: leases[:n]},
		}}
		leases = leases[n:]
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := l.meta.Propose(ctx, cmd)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}
