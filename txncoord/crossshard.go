package txncoord

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/proto/basaltpb"
	"github.com/basaltdb/basalt/shard"
)

// DefaultLockTTL is how long a transaction across shards may hold a
// shard's lock before the shard's leader resolves it through the primary
// (the coordinator may have died).
const DefaultLockTTL = 5 * time.Second

// txnPart is one shard of a transaction across shards, with the parts of
// the transaction's spans inside it.
type txnPart struct {
	desc  *basaltpb.ShardDescriptor
	spans []*basaltpb.KeyRange
	rep   *shard.Replica
}

// partsOf returns the shards the spans touch, in key order, each with the
// spans clipped to it.
func (c *Coordinator) partsOf(spans []keySpan) ([]*txnPart, error) {
	byID := make(map[uint64]*txnPart)
	var parts []*txnPart
	for _, s := range spans {
		for _, d := range c.cache.Overlapping(s.key, s.end) {
			p := byID[d.ShardId]
			if p == nil {
				rep, err := c.shards.Replica(d.ShardId)
				if err != nil {
					return nil, err
				}
				p = &txnPart{desc: d, rep: rep}
				byID[d.ShardId] = p
				parts = append(parts, p)
			}
			p.spans = append(p.spans, clip(s, d))
		}
	}
	slices.SortFunc(parts, func(a, b *txnPart) int { return bytes.Compare(a.desc.Start, b.desc.Start) })
	return parts, nil
}

// clip returns the part of span s inside shard d, as an etcd range.
func clip(s keySpan, d *basaltpb.ShardDescriptor) *basaltpb.KeyRange {
	if len(s.end) == 0 {
		return &basaltpb.KeyRange{Key: s.key}
	}
	key, end := s.key, spanEnd(s)
	if bytes.Compare(key, d.Start) < 0 {
		key = d.Start
	}
	toEnd := len(end) == 1 && end[0] == 0
	if len(d.End) > 0 && (toEnd || bytes.Compare(end, d.End) > 0) {
		end = d.End
	}
	return &basaltpb.KeyRange{Key: key, End: end}
}

// acrossReq is a transaction across shards waiting for its group.
type acrossReq struct {
	ctx   context.Context
	r     *pb.TxnRequest
	spans []keySpan
	resp  *pb.TxnResponse
	err   error
	done  chan struct{}
}

// maxGroup caps the transactions of one group.
const maxGroup = 256

// txnAcross runs a write transaction whose keys fall in several shards
// (DESIGN §5). Concurrent ones are grouped (runGroup): the group takes the
// locks of all its shards once and commits at once, each transaction at
// its own revision, as a sequencer batches the writes of one shard.
func (c *Coordinator) txnAcross(ctx context.Context, r *pb.TxnRequest, spans []keySpan) (*pb.TxnResponse, error) {
	q := &acrossReq{ctx: ctx, r: r, spans: spans, done: make(chan struct{})}
	c.across.Submit(q)
	select {
	case <-q.done:
		return q.resp, q.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *Coordinator) serveAcross(batch []*acrossReq) {
	for len(batch) > 0 {
		n := min(len(batch), maxGroup)
		c.runGroup(batch[:n])
		for _, q := range batch[:n] {
			close(q.done)
		}
		batch = batch[n:]
	}
}

// primaryElsewhere returns a NotLeaderError naming the leader of the
// transaction's primary shard (its lowest shard id) when that is another
// member: transactions across shards run where their primary's leader is,
// so that they group there and the primary's steps are local.
func (c *Coordinator) primaryElsewhere(spans []keySpan) error {
	var primary uint64
	for _, s := range spans {
		for _, d := range c.cache.Overlapping(s.key, s.end) {
			if primary == 0 || d.ShardId < primary {
				primary = d.ShardId
			}
		}
	}
	rep, err := c.shards.Replica(primary)
	if err != nil {
		return err
	}
	if leader, _ := rep.Leader(); !rep.IsLeader() && leader != 0 {
		return &shard.NotLeaderError{ShardID: primary, Leader: leader}
	}
	return nil
}

// runGroup runs a group of transactions across shards. It locks every
// shard they touch (in shard id order, so that two groups never wait for
// each other), works each transaction out in turn against this node's
// replicas while they are frozen under the locks (mvcc.Planner), commits
// the primary (the commit point, with a record of the other shards'
// writes), then the others. A transaction whose chosen branch writes
// nothing takes no revision; it is answered once the group committed, as
// it read what the group's earlier transactions wrote.
func (c *Coordinator) runGroup(group []*acrossReq) {
	var reqs []*acrossReq
	var spans []keySpan
	for _, q := range group {
		if q.err = q.ctx.Err(); q.err == nil {
			reqs = append(reqs, q)
			spans = append(spans, q.spans...)
		}
	}
	if len(reqs) == 0 {
		return
	}
	fail := func(err error) {
		for _, q := range reqs {
			q.resp, q.err = nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), RetryTimeout)
	defer cancel()
	parts, err := c.partsOf(spans)
	if err != nil {
		fail(err)
		return
	}
	start, err := c.tso.Current(ctx)
	if err != nil {
		fail(err)
		return
	}
	id := rand.Uint64() | 1
	order := slices.Clone(parts)
	slices.SortFunc(order, func(a, b *txnPart) int { return cmp.Compare(a.desc.ShardId, b.desc.ShardId) })
	primary := order[0].desc.ShardId
	var locked []*txnPart
	abort := func(err error) {
		c.abortParts(id, locked)
		fail(err)
	}
	for _, p := range order {
		// The lock may be taken even if the step fails: dropping it then
		// is harmless.
		locked = append(locked, p)
		res, err := c.txnStep(ctx, p.desc.ShardId, &basaltpb.DataCommand{Command: &basaltpb.DataCommand_Lock{Lock: &basaltpb.LockCommand{
			TxnId: id, StartRevision: start, PrimaryShard: primary, Spans: p.spans, TtlMs: c.lockTTL.Milliseconds(),
		}}})
		if err == nil {
			err = shard.CodeError(res.Error)
		}
		if err != nil {
			abort(err)
			return
		}
	}
	shards := make([]*mvcc.Shard, len(parts))
	for i, p := range parts {
		if err := p.rep.WaitLocked(ctx, id); err != nil {
			abort(err)
			return
		}
		shards[i] = p.rep.Shard()
	}
	if testHook(ctx, HookLocked) {
		fail(errCrashed)
		return
	}

	// The shards are frozen: their applied state is the cluster's at any
	// revision from now until the commit.
	now, err := c.tso.Current(ctx)
	if err != nil {
		abort(err)
		return
	}
	plan := mvcc.NewPlanner(shards, now)
	defer plan.Close()
	writes := make(map[uint64]*basaltpb.ShardWrites)
	for _, q := range reqs {
		if plan.Broken() {
			q.err = shard.ErrTxnAborted // the next group runs it
			continue
		}
		q.resp, q.err = plan.Read(ctx, q.r, c.leases)
		if !errors.Is(q.err, mvcc.ErrTxnWrites) {
			continue
		}
		rev, err := c.tso.Allocate(ctx, 1)
		if err != nil {
			q.resp, q.err = nil, err
			continue
		}
		resp, w, err := plan.Plan(ctx, rev, q.r, c.leases)
		if err != nil {
			q.resp, q.err = nil, err
			continue
		}
		q.resp, q.err = resp, nil
		for sid, sw := range w {
			data, err := proto.Marshal(sw.Txn)
			if err != nil {
				abort(err)
				return
			}
			if writes[sid] == nil {
				writes[sid] = &basaltpb.ShardWrites{}
			}
			writes[sid].Revisions = append(writes[sid].Revisions, &basaltpb.RevisionWrites{Revision: rev, Txn: data, Subs: sw.Subs})
		}
	}
	if len(writes) == 0 {
		// Nothing to commit: every answer is a read of committed state.
		c.abortParts(id, locked)
		return
	}
	record := make(map[uint64]*basaltpb.ShardWrites, len(writes))
	for sid, w := range writes {
		if sid != primary {
			record[sid] = w
		}
	}
	if err := c.commitPrimary(ctx, id, primary, writes[primary], record); err != nil {
		if errors.Is(err, shard.ErrTxnAborted) {
			c.abortParts(id, order[1:])
			fail(err) // nothing took effect: every transaction is retried
			return
		}
		// Perhaps committed: the locks' TTL settles it either way, and the
		// clients hear what etcd answers when it cannot tell.
		fail(fmt.Errorf("txncoord: commit of a transaction across shards: %v: %w", err, dragonboat.ErrTimeout))
		return
	}
	if testHook(ctx, HookCommitted) {
		fail(errCrashed)
		return
	}
	// Committed. The other shards follow; readers there wait for them.
	others := make([]uint64, 0, len(order)-1)
	for _, p := range order[1:] {
		others = append(others, p.desc.ShardId)
	}
	if committed := c.commitOthers(ctx, id, others, writes); len(committed) > 0 && !testHook(ctx, HookForget) {
		go c.forget(id, primary, committed)
	}
}

// commitPrimary commits the transaction on its primary shard. When the
// outcome is unknown (a timeout, a leader change), it settles it: an abort
// at the primary either finds the commit or makes sure it never happens.
func (c *Coordinator) commitPrimary(ctx context.Context, id, primary uint64, writes *basaltpb.ShardWrites, record map[uint64]*basaltpb.ShardWrites) error {
	res, err := c.txnStep(ctx, primary, &basaltpb.DataCommand{Command: &basaltpb.DataCommand_Commit{Commit: &basaltpb.CommitCommand{
		TxnId: id, Writes: writes, Record: record, Primary: true,
	}}})
	if err == nil {
		return shard.CodeError(res.Error)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), RetryTimeout)
	defer cancel()
	res, serr := c.txnStep(sctx, primary, &basaltpb.DataCommand{Command: &basaltpb.DataCommand_Abort{Abort: &basaltpb.AbortCommand{TxnId: id, ForShard: primary}}})
	switch {
	case serr != nil:
		return err // unknown still: the lock's TTL settles it
	case res.Committed:
		return nil
	}
	return shard.ErrTxnAborted
}

// commitOthers commits the transaction on its other shards, in parallel,
// and returns those that committed (the primary's record is no longer
// needed for them). A shard that fails is rolled forward by its leader
// after the lock's TTL.
func (c *Coordinator) commitOthers(ctx context.Context, id uint64, shards []uint64, writes map[uint64]*basaltpb.ShardWrites) []uint64 {
	ctx = context.WithoutCancel(ctx)
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		committed []uint64
	)
	for _, sid := range shards {
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, RetryTimeout)
			defer cancel()
			res, err := c.txnStep(sctx, sid, &basaltpb.DataCommand{Command: &basaltpb.DataCommand_Commit{Commit: &basaltpb.CommitCommand{
				TxnId: id, Writes: writes[sid],
			}}})
			if err == nil {
				err = shard.CodeError(res.Error)
			}
			if err != nil {
				c.lg.Warn("commit-across-shards", zap.Uint64("shard-id", sid), zap.Uint64("txn-id", id), zap.Error(err))
				return
			}
			mu.Lock()
			committed = append(committed, sid)
			mu.Unlock()
		})
	}
	wg.Wait()
	return committed
}

// abortParts drops a transaction's locks (best effort: a lock left behind
// is resolved after its TTL).
func (c *Coordinator) abortParts(id uint64, parts []*txnPart) {
	ctx, cancel := context.WithTimeout(context.Background(), RetryTimeout)
	defer cancel()
	for _, p := range parts {
		if _, err := c.txnStep(ctx, p.desc.ShardId, &basaltpb.DataCommand{Command: &basaltpb.DataCommand_Abort{Abort: &basaltpb.AbortCommand{TxnId: id}}}); err != nil {
			c.lg.Debug("abort-across-shards", zap.Uint64("shard-id", p.desc.ShardId), zap.Uint64("txn-id", id), zap.Error(err))
		}
	}
}

// forget drops the shards that committed from the primary's commit record
// (and the record once none is left in it; none named: the record). Best
// effort: SweepTxnRecords finds a record that stays.
func (c *Coordinator) forget(id, primary uint64, committed []uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), RetryTimeout)
	defer cancel()
	if _, err := c.txnStep(ctx, primary, &basaltpb.DataCommand{Command: &basaltpb.DataCommand_Forget{Forget: &basaltpb.ForgetCommand{TxnId: id, Shards: committed}}}); err != nil {
		c.lg.Debug("forget-across-shards", zap.Uint64("txn-id", id), zap.Error(err))
	}
}

// SweepTxnRecords finishes, every two lock TTLs until ctx ends, the
// transactions across shards whose commit records stayed since the
// previous look on a shard this node leads: their coordinator died, or a
// shard's commit or the record's forget failed. Each shard left in a
// record is sent its part again: one that committed it answers OK, one
// that still holds the lock commits it, as the lock's resolution would.
// The shards that committed are dropped from the record.
func (c *Coordinator) SweepTxnRecords(ctx context.Context) {
	var seen map[uint64]bool // the records found at the previous look
	every(ctx, 2*c.lockTTL, func() { seen = c.finishStaleTxns(ctx, seen) })
}

// finishStaleTxns finishes the transactions whose records are in seen,
// and returns the records it found.
func (c *Coordinator) finishStaleTxns(ctx context.Context, seen map[uint64]bool) map[uint64]bool {
	reps, err := c.allReplicas()
	if err != nil {
		return seen
	}
	found := make(map[uint64]bool)
	for _, rep := range reps {
		if !rep.IsLeader() {
			continue
		}
		recs, err := rep.Shard().TxnRecords()
		if err != nil {
			c.lg.Warn("txn-records", zap.Uint64("shard-id", rep.ShardID()), zap.Error(err))
			continue
		}
		for _, r := range recs {
			found[r.ID] = true
			if !seen[r.ID] || ctx.Err() != nil {
				continue // perhaps still being committed
			}
			rec := &basaltpb.CommitCommand{}
			if err := proto.Unmarshal(r.Data, rec); err != nil {
				c.lg.Warn("txn-records", zap.Uint64("shard-id", rep.ShardID()), zap.Uint64("txn-id", r.ID), zap.Error(err))
				continue
			}
			shards := slices.Sorted(maps.Keys(rec.Record))
			committed := c.commitOthers(ctx, r.ID, shards, rec.Record)
			if len(committed) == len(shards) {
				committed = nil // every one: the whole record goes
			} else if len(committed) == 0 {
				continue
			}
			c.lg.Info("finish-stale-txn", zap.Uint64("shard-id", rep.ShardID()), zap.Uint64("txn-id", r.ID), zap.Uint64s("committed", committed))
			c.forget(r.ID, rep.ShardID(), committed)
		}
	}
	return found
}

// ResolveLock settles a lock whose TTL ran out (shard.LockResolver): an
// abort at the primary either rolls the transaction back there or finds it
// committed; the shard then commits its part or drops its lock.
func (c *Coordinator) ResolveLock(ctx context.Context, shardID uint64, l *basaltpb.LockCommand) error {
	res, err := c.txnStep(ctx, l.PrimaryShard, &basaltpb.DataCommand{Command: &basaltpb.DataCommand_Abort{Abort: &basaltpb.AbortCommand{TxnId: l.TxnId, ForShard: shardID}}})
	if err != nil || l.PrimaryShard == shardID {
		return err
	}
	step := &basaltpb.DataCommand{Command: &basaltpb.DataCommand_Abort{Abort: &basaltpb.AbortCommand{TxnId: l.TxnId}}}
	if res.Committed {
		step = &basaltpb.DataCommand{Command: &basaltpb.DataCommand_Commit{Commit: &basaltpb.CommitCommand{
			TxnId: l.TxnId, Writes: res.Writes,
		}}}
	}
	c.lg.Info("resolve-expired-lock", zap.Uint64("shard-id", shardID), zap.Uint64("txn-id", l.TxnId), zap.Bool("committed", res.Committed))
	done, err := c.txnStep(ctx, shardID, step)
	if err == nil {
		err = shard.CodeError(done.Error)
	}
	if err != nil {
		return err
	}
	if res.Committed {
		// Rolled forward: the primary's record is no longer needed here.
		c.forget(l.TxnId, l.PrimaryShard, []uint64{shardID})
	}
	return nil
}

// txnStep runs a step of a transaction across shards at the shard's
// leader: here, or through the Internal service.
func (c *Coordinator) txnStep(ctx context.Context, shardID uint64, cmd *basaltpb.DataCommand) (*basaltpb.TxnResult, error) {
	var res *basaltpb.TxnResult
	err := c.atShardLeader(ctx, func() (err error) {
		res, err = c.TxnStepHere(ctx, shardID, cmd)
		return err
	}, func(peer basaltpb.InternalClient) error {
		data, err := proto.Marshal(cmd)
		if err != nil {
			return err
		}
		resp, err := peer.TxnStep(ctx, &basaltpb.TxnStepRequest{ShardId: shardID, Command: data})
		if err != nil {
			return err
		}
		res = resp.Result
		return nil
	})
	return res, err
}

// TxnStepHere runs a step of a transaction across shards on this node's
// replica of the shard, which must lead it.
func (c *Coordinator) TxnStepHere(ctx context.Context, shardID uint64, cmd *basaltpb.DataCommand) (*basaltpb.TxnResult, error) {
	rep, err := c.shards.Replica(shardID)
	if err != nil {
		return nil, err
	}
	return rep.TxnStep(ctx, cmd)
}

// Hook names a point of a transaction across shards where a test may
// make its coordinator stop as if it had died (SetTestHook).
type Hook int

const (
	// HookLocked is reached once every shard holds the transaction's lock.
	HookLocked Hook = iota
	// HookCommitted is reached once the primary committed, before the
	// other shards do.
	HookCommitted
	// HookForget is reached once the other shards committed, before the
	// primary is told to drop its commit record.
	HookForget
)

// errCrashed is what a coordinator that a test hook stopped answers; it
// leaves its locks as a dead coordinator would.
var errCrashed = errors.New("txncoord: coordinator stopped by a test hook")

var testHookFn atomic.Pointer[func(context.Context, Hook) bool]

// SetTestHook makes every coordinator in the process call f at each Hook;
// when f returns true the coordinator stops there as if it had died (its
// locks stay until their TTL). Tests only; nil removes it.
func SetTestHook(f func(ctx context.Context, at Hook) (crash bool)) {
	if f == nil {
		testHookFn.Store(nil)
		return
	}
	testHookFn.Store(&f)
}

func testHook(ctx context.Context, at Hook) bool {
	f := testHookFn.Load()
	return f != nil && (*f)(ctx, at)
}
