package shard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	sm "github.com/lni/dragonboat/v4/statemachine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/proto/basaltpb"
)

// DataStateMachine is a data shard's replica state: dragonboat's
// IOnDiskStateMachine over the shard's part of the node's mvcc store. Apply
// is deterministic: it reads only the entries and the stored state.
type DataStateMachine struct {
	shardID   uint64
	replicaID uint64
	store     *mvcc.Store
	start     []byte
	end       []byte
	leases    mvcc.LeaseChecker
	lg        *zap.Logger

	sh       *mvcc.Shard   // set by Open
	opened   chan struct{} // closed by Open
	sink     atomic.Pointer[sinkRef]
	observer atomic.Pointer[observerRef]
	onSplit  atomic.Pointer[func(Split)]

	// resolved is the shard's resolved revision as this replica's log says:
	// every write of the shard at or below it is applied here.
	resolvedMu sync.Mutex
	resolved   int64
	resolvedc  chan struct{} // closed when resolved grows or the lock changes

	// lock is the lock of a transaction across shards the shard holds here
	// (nil: none), decoded; lockSince is when this replica saw it (Unix
	// nanoseconds), from which its TTL runs.
	lock      atomic.Pointer[basaltpb.LockCommand]
	lockSince atomic.Int64

	snapshots snapshotTrigger // used by Update only
}

// snapshotTrigger asks for a Raft snapshot after every so many applied
// writes (SnapshotEvery).
type snapshotTrigger struct {
	every   uint64
	request func(keep uint64) bool
	writes  uint64 // applied since the last accepted request
	index   uint64 // the last index applied at that request
}

// applied counts n writes applied up to index and asks for a snapshot
// when they reach the interval. A refused request (dragonboat takes one
// at a time) is asked again at the next batch.
func (t *snapshotTrigger) applied(n int, index uint64) {
	if t.request == nil {
		return
	}
	t.writes += uint64(n)
	if t.writes < t.every || !t.request(index-t.index) {
		return
	}
	t.writes, t.index = 0, index
}

// Split describes a shard created by a split, as its parent applied it.
type Split struct {
	ParentID uint64
	// Child is the new shard's descriptor: id, span, replicas (voting and
	// not), epoch 1.
	Child *basaltpb.ShardDescriptor
	// Voters are the child's initial members; the other replicas join it
	// as non-voting ones.
	Voters map[uint64]string
}

// OnSplit registers f, called after a batch that split the shard commits
// (on the apply goroutine: it must not block). The node starts the child's
// replica from it.
func (s *DataStateMachine) OnSplit(f func(Split)) { s.onSplit.Store(&f) }

// SnapshotEvery makes the replica call request after every n applied
// writes, which asks dragonboat for a snapshot of the replica and a log
// compaction that keeps the last keep entries: those that hold the n
// writes before (etcd's --snapshot-count counts transactions; a Basalt
// entry holds a batch of them, a hundred under a heavy load, so a count of
// entries kept a log a hundred times etcd's, and the Raft log store
// flushed and compacted it). request runs on the apply goroutine: it must
// not block, and reports whether the request was taken. Call it before the
// replica starts.
func (s *DataStateMachine) SnapshotEvery(n uint64, request func(keep uint64) bool) {
	s.snapshots = snapshotTrigger{every: n, request: request}
}

// ResultSink is the sequencer on this node, which proposed (some of) the
// writes apply meets. Apply tells it the outcome of every write after the
// writes are committed to the store.
type ResultSink interface {
	Applied(rev int64, resp *pb.TxnResponse, err error)
	// LockChanged tells that the shard took or dropped a lock.
	LockChanged()
	// Proposed returns the transaction the sink proposed at rev, if it did:
	// the same transaction the entry holds, already decoded.
	Proposed(rev int64) *pb.TxnRequest
}

type sinkRef struct{ ResultSink }

// SetSink directs write outcomes to s.
func (s *DataStateMachine) SetSink(sink ResultSink) { s.sink.Store(&sinkRef{sink}) }

// outcome is the result of one applied write.
type outcome struct {
	rev  int64
	resp *pb.TxnResponse
	err  error
}

var _ sm.IOnDiskStateMachine = (*DataStateMachine)(nil)

// NewDataStateMachine returns the state machine of one replica of a data
// shard that owns [start, end) when it is first created.
func NewDataStateMachine(store *mvcc.Store, shardID, replicaID uint64, start, end []byte, leases mvcc.LeaseChecker, lg *zap.Logger) *DataStateMachine {
	return &DataStateMachine{
		shardID: shardID, replicaID: replicaID, store: store, start: start, end: end, leases: leases,
		lg:        lg.With(zap.Uint64("shard-id", shardID), zap.Uint64("replica-id", replicaID)),
		opened:    make(chan struct{}),
		resolvedc: make(chan struct{}),
	}
}

// Open loads the shard and returns the Raft index of the last applied entry.
func (s *DataStateMachine) Open(<-chan struct{}) (uint64, error) {
	sh, err := s.store.OpenShard(s.shardID, s.start, s.end)
	if err != nil {
		return 0, err
	}
	s.sh = sh
	s.resolved = max(sh.Rev(), sh.CompactRev())
	s.snapshots.index = sh.AppliedIndex()
	if err := s.loadLock(); err != nil {
		return 0, err
	}
	close(s.opened)
	return sh.AppliedIndex(), nil
}

// Shard returns the mvcc shard; valid after Open.
func (s *DataStateMachine) Shard() *mvcc.Shard { return s.sh }

// Update applies committed entries in one Pebble batch together with the
// index of the last one, then tells the sink how each write ended.
func (s *DataStateMachine) Update(entries []sm.Entry) ([]sm.Entry, error) {
	w := s.sh.NewWriter()
	observed := s.observer.Load() != nil
	if observed {
		w.CaptureEvents()
	}
	if s.sh.AppliedIndex() == 0 {
		// First entry ever: record the span the shard was created with.
		w.SetSpan(s.start, s.end)
	}
	var (
		outcomes []outcome
		resolved int64 // from the leader's resolved markers
		splits   []Split
	)
	for i := range entries {
		result, err := s.apply(w, entries[i].Cmd, &outcomes, &resolved, &splits)
		if err != nil {
			w.Abort()
			s.lg.Error("apply-failed", zap.Uint64("index", entries[i].Index), zap.Error(err))
			return nil, err
		}
		entries[i].Result = sm.Result{Value: 1, Data: result}
	}
	if err := w.Commit(entries[len(entries)-1].Index); err != nil {
		return nil, err
	}
	if w.LockChanged() {
		if err := s.loadLock(); err != nil {
			return nil, err
		}
		s.notify()
	}
	// Every write of this shard at or below its revision is applied:
	// batches apply in revision order.
	s.advanceResolved(max(w.Rev(), resolved))
	if observed {
		s.publish(w.Events(), w.EventSubs(), max(w.Rev(), resolved))
	}
	if ref := s.sink.Load(); ref != nil {
		for _, o := range outcomes {
			ref.Applied(o.rev, o.resp, o.err)
		}
		if w.LockChanged() {
			ref.LockChanged()
		}
	}
	s.snapshots.applied(len(outcomes), entries[len(entries)-1].Index)
	if len(splits) > 0 {
		// Make the split durable before the child starts: replayed after a
		// crash, it would write the child's metadata over what the child
		// applied since.
		if err := s.store.Sync(); err != nil {
			return nil, err
		}
		if f := s.onSplit.Load(); f != nil {
			for _, sp := range splits {
				(*f)(sp)
			}
		}
	}
	return entries, nil
}

func (s *DataStateMachine) apply(w *mvcc.Writer, cmd []byte, outcomes *[]outcome, resolved *int64, splits *[]Split) ([]byte, error) {
	other, err := decodeDataCommand(cmd, func(rev int64, txn []byte) error {
		return s.applyWrite(w, rev, txn, outcomes)
	})
	if err != nil || other == nil {
		return nil, err
	}
	if r := other.GetResolved(); r != nil {
		*resolved = max(*resolved, r.Revision)
		return nil, nil
	}
	switch c := other.Command.(type) {
	case *basaltpb.DataCommand_Split:
		if w.Lock() != nil {
			// Proposed by a deposed leader: a locked shard does not split.
			return proto.Marshal(&basaltpb.MetaResult{Error: basaltpb.ErrorCode_LOCKED})
		}
		return s.applySplit(w, c.Split, splits)
	case *basaltpb.DataCommand_Lock:
		return s.applyLock(w, c.Lock)
	case *basaltpb.DataCommand_Commit:
		return s.applyCommit(w, c.Commit)
	case *basaltpb.DataCommand_Abort:
		return s.applyAbort(w, c.Abort)
	case *basaltpb.DataCommand_Forget:
		return s.applyForget(w, c.Forget)
	}
	compact := other.GetCompact()
	if compact == nil {
		return nil, fmt.Errorf("shard: unknown data command %T", other.Command)
	}
	code := basaltpb.ErrorCode_OK
	if compact.Revision <= w.CompactRev() {
		code = basaltpb.ErrorCode_COMPACTED
	} else if err := w.Compact(compact.Revision); err != nil {
		return nil, err
	}
	// The leader proposes a compaction once every write of the shard at or
	// below its revision is applied.
	*resolved = max(*resolved, compact.Revision)
	return proto.Marshal(&basaltpb.CompactResult{Error: code})
}

func (s *DataStateMachine) advanceResolved(rev int64) {
	s.resolvedMu.Lock()
	defer s.resolvedMu.Unlock()
	if rev > s.resolved {
		s.resolved = rev
		close(s.resolvedc)
		s.resolvedc = make(chan struct{})
	}
}

// notify wakes the waiters of waitResolved and waitUnlocked.
func (s *DataStateMachine) notify() {
	s.resolvedMu.Lock()
	defer s.resolvedMu.Unlock()
	close(s.resolvedc)
	s.resolvedc = make(chan struct{})
}

// waitResolved returns once this replica has applied every write of the
// shard at or below rev, as its log tells (writes, and the leader's
// resolved markers).
func (s *DataStateMachine) waitResolved(ctx context.Context, rev int64) error {
	for {
		s.resolvedMu.Lock()
		done, ch := s.resolved >= rev, s.resolvedc
		s.resolvedMu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Resolved returns the shard's resolved revision on this replica.
func (s *DataStateMachine) Resolved() int64 {
	s.resolvedMu.Lock()
	defer s.resolvedMu.Unlock()
	return s.resolved
}

// applySplit gives [key, end) to the child shard; the result says whether
// the key was inside the span.
func (s *DataStateMachine) applySplit(w *mvcc.Writer, sp *basaltpb.SplitCommand, splits *[]Split) ([]byte, error) {
	_, end := w.Span()
	code := basaltpb.ErrorCode_OK
	if err := w.Split(sp.Key, sp.ChildId); errors.Is(err, mvcc.ErrBadSplitKey) {
		code = basaltpb.ErrorCode_WRONG_SHARD
	} else if err != nil {
		return nil, err
	} else {
		*splits = append(*splits, Split{ParentID: s.shardID, Voters: sp.Replicas, Child: &basaltpb.ShardDescriptor{
			ShardId: sp.ChildId, Start: sp.Key, End: end, Replicas: childReplicas(sp), Epoch: 1,
		}})
		s.lg.Info("split", zap.Uint64("child-id", sp.ChildId), zap.String("key", fmt.Sprintf("%q", sp.Key)))
	}
	return proto.Marshal(&basaltpb.MetaResult{Error: code})
}

// childReplicas returns every replica a split's child starts on.
func childReplicas(sp *basaltpb.SplitCommand) map[uint64]string {
	all := make(map[uint64]string, len(sp.Replicas)+len(sp.NonVoting))
	for id, addr := range sp.Replicas {
		all[id] = addr
	}
	for id, addr := range sp.NonVoting {
		all[id] = addr
	}
	return all
}

// applyWrite applies one write of a batch. Its outcome goes to the sink,
// not into the entry's result: only the proposer wants it, and it is on
// this node.
func (s *DataStateMachine) applyWrite(w *mvcc.Writer, rev int64, data []byte, outcomes *[]outcome) error {
	if rev <= w.Rev() || w.Lock() != nil {
		// Proposed by a deposed leader: its revision is not above what this
		// shard has applied, or the shard is locked by a transaction across
		// shards, which applies no other write.
		*outcomes = append(*outcomes, outcome{rev: rev, err: ErrStaleRevision})
		return nil
	}
	var txn *pb.TxnRequest
	if ref := s.sink.Load(); ref != nil {
		txn = ref.Proposed(rev) // revisions are unique: it is this entry's
	}
	// Only the proposer answers the write; every other replica (and the
	// proposer once it has given up on it) applies it without building
	// the response.
	respond := txn != nil
	if txn == nil {
		var err error
		if txn, err = UnmarshalTxn(data); err != nil {
			return fmt.Errorf("shard: undecodable txn at revision %d: %w", rev, err)
		}
	}
	if !w.ContainsTxn(txn) {
		// Sequenced before a split by a leader that was deposed meanwhile:
		// the keys belong to another shard now.
		*outcomes = append(*outcomes, outcome{rev: rev, err: ErrWrongShard})
		return nil
	}
	var (
		resp    *pb.TxnResponse
		changed bool
		err     error
	)
	if respond {
		resp, changed, err = w.ApplyTxn(context.Background(), rev, txn, s.leases)
	} else {
		changed, err = w.ApplyTxnWrites(context.Background(), rev, txn, s.leases)
	}
	switch {
	case err != nil:
		if _, ok := errorCode(err); !ok {
			return err
		}
	case !changed:
		resp, err = nil, ErrNoWrite
	}
	*outcomes = append(*outcomes, outcome{rev: rev, resp: resp, err: err})
	return nil
}

// Lookup is not used: reads go through the mvcc shard after ReadIndex.
func (s *DataStateMachine) Lookup(any) (any, error) {
	return nil, errors.New("shard: lookup not supported")
}

// Sync makes applied entries durable.
func (s *DataStateMachine) Sync() error { return s.store.Sync() }

// PrepareSnapshot pins the current state.
func (s *DataStateMachine) PrepareSnapshot() (any, error) { return s.store.DB().NewSnapshot(), nil }

// SaveSnapshot streams the pinned state of the shard.
func (s *DataStateMachine) SaveSnapshot(ctx any, w io.Writer, _ <-chan struct{}) error {
	snap := ctx.(*pebble.Snapshot)
	defer snap.Close()
	return s.sh.WriteSnapshot(snap, w)
}

// RecoverFromSnapshot replaces the shard's state with a snapshot's.
func (s *DataStateMachine) RecoverFromSnapshot(r io.Reader, _ <-chan struct{}) error {
	if err := s.sh.RecoverSnapshot(r); err != nil {
		return err
	}
	if err := s.loadLock(); err != nil {
		return err
	}
	s.notify()
	resolved := max(s.sh.Rev(), s.sh.CompactRev())
	s.advanceResolved(resolved)
	s.publishReplaced(resolved)
	s.lg.Info("recovered-from-snapshot", zap.Uint64("applied-index", s.sh.AppliedIndex()), zap.Int64("revision", s.sh.Rev()))
	return nil
}

// Close releases nothing: the store belongs to the node.
func (s *DataStateMachine) Close() error { return nil }

// errorCode maps the errors a transaction returns for its input to result
// codes; any other error is a failure of the store.
func errorCode(err error) (basaltpb.ErrorCode, bool) {
	switch {
	case errors.Is(err, mvcc.ErrKeyNotFound):
		return basaltpb.ErrorCode_KEY_NOT_FOUND, true
	case errors.Is(err, mvcc.ErrLeaseNotFound):
		return basaltpb.ErrorCode_LEASE_NOT_FOUND, true
	case errors.Is(err, mvcc.ErrFutureRev):
		return basaltpb.ErrorCode_FUTURE_REVISION, true
	case errors.Is(err, mvcc.ErrCompacted):
		return basaltpb.ErrorCode_COMPACTED, true
	}
	return 0, false
}

// CodeError is the error a result code stands for (nil for OK).
func CodeError(code basaltpb.ErrorCode) error { return codeError(code) }

// codeError is the inverse of errorCode.
func codeError(code basaltpb.ErrorCode) error {
	switch code {
	case basaltpb.ErrorCode_OK:
		return nil
	case basaltpb.ErrorCode_KEY_NOT_FOUND:
		return mvcc.ErrKeyNotFound
	case basaltpb.ErrorCode_LEASE_NOT_FOUND:
		return mvcc.ErrLeaseNotFound
	case basaltpb.ErrorCode_FUTURE_REVISION:
		return mvcc.ErrFutureRev
	case basaltpb.ErrorCode_COMPACTED:
		return mvcc.ErrCompacted
	case basaltpb.ErrorCode_NO_WRITE:
		return ErrNoWrite
	case basaltpb.ErrorCode_STALE_REVISION:
		return ErrStaleRevision
	case basaltpb.ErrorCode_LEASE_EXISTS:
		return ErrLeaseExists
	case basaltpb.ErrorCode_MEMBER_NOT_FOUND:
		return ErrMemberNotFound
	case basaltpb.ErrorCode_WRONG_SHARD:
		return ErrWrongShard
	case basaltpb.ErrorCode_LOCKED:
		return ErrLocked
	case basaltpb.ErrorCode_TXN_ABORTED:
		return ErrTxnAborted
	}
	return fmt.Errorf("shard: unknown result code %v", code)
}
