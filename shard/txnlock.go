package shard

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/proto/basaltpb"
)

// Transactions across shards (DESIGN §5). A shard takes part through its
// Raft log: LockCommand freezes it for one transaction (no other write
// applies until the transaction commits or aborts here, so its revision
// stays below the commit revision and its applied state is what the
// coordinator plans the transaction against); CommitCommand applies its
// part at the commit revision; AbortCommand drops the lock. The primary
// shard's commit is the commit point and keeps a record of the other
// shards' writes, from which a lock whose coordinator died is rolled
// forward (or, when the primary never committed, back) after its TTL.

var (
	// ErrLocked is returned when the shard holds another transaction's
	// lock: the request waits for it to go and is sent again.
	ErrLocked = errors.New("shard: locked by a transaction across shards")
	// ErrTxnAborted is returned for a transaction across shards whose lock
	// is gone without a commit: it never took effect and may be run again.
	ErrTxnAborted = errors.New("shard: transaction across shards aborted")
)

// PendingLock returns the lock the shard holds on this replica, nil when
// none.
func (s *DataStateMachine) PendingLock() *basaltpb.LockCommand { return s.lock.Load() }

// loadLock reads the shard's lock from the store (Open, snapshots).
func (s *DataStateMachine) loadLock() error {
	raw := s.sh.Lock()
	if raw == nil {
		s.lock.Store(nil)
		return nil
	}
	l := &basaltpb.LockCommand{}
	if err := proto.Unmarshal(raw, l); err != nil {
		return fmt.Errorf("shard: undecodable lock: %w", err)
	}
	s.lock.Store(l)
	s.lockSince.Store(time.Now().UnixNano())
	return nil
}

// lockBlocks reports whether a read at rev must wait for the lock: the
// transaction may commit at or below rev (its commit revision is above its
// start revision).
func lockBlocks(l *basaltpb.LockCommand, rev int64) bool {
	return l != nil && rev > l.StartRevision
}

// lockOf decodes the lock a batch leaves on the shard.
func lockOf(w *mvcc.Writer) (*basaltpb.LockCommand, error) {
	raw := w.Lock()
	if raw == nil {
		return nil, nil
	}
	l := &basaltpb.LockCommand{}
	if err := proto.Unmarshal(raw, l); err != nil {
		return nil, fmt.Errorf("shard: undecodable lock: %w", err)
	}
	return l, nil
}

func txnResult(code basaltpb.ErrorCode) ([]byte, error) {
	return proto.Marshal(&basaltpb.TxnResult{Error: code})
}

// applyLock takes the shard's lock for a transaction, unless another holds
// it or a key is outside the span. Taking it again is a no-op.
func (s *DataStateMachine) applyLock(w *mvcc.Writer, l *basaltpb.LockCommand) ([]byte, error) {
	cur, err := lockOf(w)
	if err != nil {
		return nil, err
	}
	if cur != nil {
		if cur.TxnId == l.TxnId {
			return txnResult(basaltpb.ErrorCode_OK)
		}
		return txnResult(basaltpb.ErrorCode_LOCKED)
	}
	for _, sp := range l.Spans {
		if !w.ContainsRange(sp.Key, sp.End) {
			return txnResult(basaltpb.ErrorCode_WRONG_SHARD)
		}
	}
	raw, err := proto.Marshal(l)
	if err != nil {
		return nil, err
	}
	w.SetLock(raw)
	return txnResult(basaltpb.ErrorCode_OK)
}

// applyCommit applies the shard's part of a transaction (or of a group of
// them, in revision order) that holds its lock. Without the lock: the primary answers OK if its record shows the
// commit and TXN_ABORTED otherwise; another shard committed it already (it
// is sent a commit only once the primary committed, and its lock is never
// rolled back then).
func (s *DataStateMachine) applyCommit(w *mvcc.Writer, c *basaltpb.CommitCommand) ([]byte, error) {
	cur, err := lockOf(w)
	if err != nil {
		return nil, err
	}
	if cur == nil || cur.TxnId != c.TxnId {
		if !c.Primary {
			return txnResult(basaltpb.ErrorCode_OK)
		}
		if _, ok, err := w.TxnRecord(c.TxnId); err != nil {
			return nil, err
		} else if ok {
			return txnResult(basaltpb.ErrorCode_OK)
		}
		return txnResult(basaltpb.ErrorCode_TXN_ABORTED)
	}
	for _, rw := range c.Writes.GetRevisions() {
		txn := &pb.TxnRequest{}
		if err := proto.Unmarshal(rw.Txn, txn); err != nil {
			return nil, fmt.Errorf("shard: undecodable writes of transaction %x: %w", c.TxnId, err)
		}
		if err := w.ApplyWrites(context.Background(), rw.Revision, rw.Subs, txn); err != nil {
			return nil, err
		}
	}
	w.SetLock(nil)
	if c.Primary {
		// The record: enough to roll the other shards forward.
		rec, err := proto.Marshal(&basaltpb.CommitCommand{TxnId: c.TxnId, Record: c.Record})
		if err != nil {
			return nil, err
		}
		w.SetTxnRecord(c.TxnId, rec)
	}
	return txnResult(basaltpb.ErrorCode_OK)
}

// applyAbort drops the transaction's lock. When the shard no longer holds
// it and is the transaction's primary with a commit record, the answer is
// the commit (for the shard that asks, its writes).
func (s *DataStateMachine) applyAbort(w *mvcc.Writer, a *basaltpb.AbortCommand) ([]byte, error) {
	cur, err := lockOf(w)
	if err != nil {
		return nil, err
	}
	if cur != nil && cur.TxnId == a.TxnId {
		w.SetLock(nil)
		return txnResult(basaltpb.ErrorCode_OK)
	}
	raw, ok, err := w.TxnRecord(a.TxnId)
	if err != nil || !ok {
		return nil, err
	}
	rec := &basaltpb.CommitCommand{}
	if err := proto.Unmarshal(raw, rec); err != nil {
		return nil, fmt.Errorf("shard: undecodable record of transaction %x: %w", a.TxnId, err)
	}
	return proto.Marshal(&basaltpb.TxnResult{Committed: true, Writes: rec.Record[a.ForShard]})
}

// applyForget drops from the primary's commit record the shards that
// committed (all of them when it names none), and the record once none is
// left.
func (s *DataStateMachine) applyForget(w *mvcc.Writer, f *basaltpb.ForgetCommand) ([]byte, error) {
	if len(f.Shards) > 0 {
		raw, ok, err := w.TxnRecord(f.TxnId)
		if err != nil {
			return nil, err
		}
		if !ok {
			return txnResult(basaltpb.ErrorCode_OK)
		}
		rec := &basaltpb.CommitCommand{}
		if err := proto.Unmarshal(raw, rec); err != nil {
			return nil, fmt.Errorf("shard: undecodable record of transaction %x: %w", f.TxnId, err)
		}
		for _, sid := range f.Shards {
			delete(rec.Record, sid)
		}
		if len(rec.Record) > 0 {
			raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
			if err != nil {
				return nil, err
			}
			w.SetTxnRecord(f.TxnId, raw)
			return txnResult(basaltpb.ErrorCode_OK)
		}
	}
	w.SetTxnRecord(f.TxnId, nil)
	return txnResult(basaltpb.ErrorCode_OK)
}

// waitUnlocked returns once the shard holds no lock that a read at rev
// must wait for (on this replica).
func (s *DataStateMachine) waitUnlocked(ctx context.Context, rev int64) error {
	for {
		s.resolvedMu.Lock()
		blocked, ch := lockBlocks(s.lock.Load(), rev), s.resolvedc
		s.resolvedMu.Unlock()
		if !blocked {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// TxnStep runs a step of a transaction across shards on the leader: a
// LockCommand goes through the sequencer (after the writes it proposed;
// while the shard holds another lock it waits), the others are proposed as
// they are. The result's code tells how the step ended (CodeError).
func (r *Replica) TxnStep(ctx context.Context, cmd *basaltpb.DataCommand) (*basaltpb.TxnResult, error) {
	if err := r.checkLeader(); err != nil {
		return nil, err
	}
	data, err := proto.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	if l := cmd.GetLock(); l != nil {
		return r.seq.Lock(ctx, l, data)
	}
	return r.proposeTxnStep(ctx, data)
}

func (r *Replica) proposeTxnStep(ctx context.Context, data []byte) (*basaltpb.TxnResult, error) {
	ctx, cancel := context.WithTimeout(ctx, min(timeoutOf(ctx), r.seq.cfg.ProposalTimeout))
	defer cancel()
	res, err := r.nh.SyncPropose(ctx, r.nh.GetNoOPSession(r.shardID), data)
	if err != nil {
		return nil, err
	}
	out := &basaltpb.TxnResult{}
	if err := proto.Unmarshal(res.Data, out); err != nil {
		return nil, fmt.Errorf("shard: undecodable transaction result: %w", err)
	}
	return out, nil
}

// WaitLocked returns once this replica has applied the lock of transaction
// txnID: its applied state is then the shard's state under the lock. It
// fails with ErrTxnAborted when the shard holds another lock or none after
// a ReadIndex (the lock went: its TTL ran out).
func (r *Replica) WaitLocked(ctx context.Context, txnID uint64) error {
	if l := r.sm.PendingLock(); l != nil && l.TxnId == txnID {
		return nil
	}
	if err := r.readIndex(ctx); err != nil {
		return err
	}
	if l := r.sm.PendingLock(); l != nil && l.TxnId == txnID {
		return nil
	}
	return ErrTxnAborted
}

// LockResolver resolves a lock whose TTL ran out, through the
// transaction's primary shard (txncoord).
type LockResolver func(ctx context.Context, shardID uint64, lock *basaltpb.LockCommand) error

// SetLockResolver lets the leader resolve locks whose coordinator may have
// died.
func (r *Replica) SetLockResolver(f LockResolver) { r.lockResolver.Store(&f) }

// resolveExpiredLock resolves, on the leader, a lock held longer than its
// TTL (counted from when this replica saw it, so that clocks of other
// members do not matter), one at a time.
func (r *Replica) resolveExpiredLock() {
	l := r.sm.PendingLock()
	f := r.lockResolver.Load()
	if l == nil || f == nil || !r.IsLeader() {
		return
	}
	since := time.Unix(0, r.sm.lockSince.Load())
	if time.Since(since) < time.Duration(l.TtlMs)*time.Millisecond || !r.resolvingLock.CompareAndSwap(false, true) {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer r.resolvingLock.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := (*f)(ctx, r.shardID, l); err != nil && r.lg != nil {
			r.lg.Warn("resolve-expired-lock", zap.Uint64("shard-id", r.shardID), zap.Uint64("txn-id", l.TxnId), zap.Error(err))
		}
	}()
}
