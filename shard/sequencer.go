package shard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/client"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/proto/basaltpb"
)

// RevisionAllocator hands out cluster-wide revisions: Allocate(n) returns
// the first of n consecutive revisions, all above any revision handed out or
// reported current before the call; Current returns the newest handed out.
type RevisionAllocator interface {
	Allocate(ctx context.Context, n int) (first int64, err error)
	Current(ctx context.Context) (int64, error)
}

// Proposer appends commands to a shard's Raft log (dragonboat's
// INodeUser); commands proposed in order are appended in order.
type Proposer interface {
	Propose(s *client.Session, cmd []byte, timeout time.Duration) (*dragonboat.RequestState, error)
}

// SequencerConfig configures a Sequencer.
type SequencerConfig struct {
	// MaxBatch caps the writes of one Raft entry.
	MaxBatch int
	// MaxBatchBytes caps the marshaled size of one Raft entry.
	MaxBatchBytes int
	// MaxInflight caps the entries proposed and not yet applied.
	MaxInflight int
	// QueueSize caps the writes waiting to be sequenced.
	QueueSize int
	// ProposalTimeout bounds one proposal.
	ProposalTimeout time.Duration
	// Gate, when set, tells when the Raft log store syncs: writes arriving
	// meanwhile wait for the sync to end and share an entry.
	Gate *SyncGate
}

func (c *SequencerConfig) setDefaults() {
	if c.MaxBatch == 0 {
		c.MaxBatch = 512
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = 4 << 20
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 16
	}
	if c.QueueSize == 0 {
		c.QueueSize = 8192
	}
	if c.ProposalTimeout == 0 {
		c.ProposalTimeout = 10 * time.Second
	}
}

// Sequencer orders the writes of one shard at its leader (DESIGN §5). It
// batches waiting writes, evaluates those whose outcome depends on stored
// state, takes one run of revisions from the TSO per batch for the writes
// that will change state, and proposes the batch as one Raft entry. Batches
// are proposed in revision order and pipelined: the next batch is proposed
// before the previous one is applied. With a batch in flight, writes that
// arrive while the Raft log store syncs wait for its end (SyncGate).
//
// A conditional write (compares, deletes, ignore_value/ignore_lease) is
// evaluated only when no write proposed before it touches what it reads; it
// waits until those are applied. Apply evaluates it again and is the
// authority; with the latches both agree, so revisions stay dense.
//
// The sequencer also tracks which revisions of the shard are resolved: a
// read at R may proceed once no allocation is under way and every batch with
// a revision at or below R is applied (WaitResolved).
type Sequencer struct {
	cfg      SequencerConfig
	shardID  uint64
	proposer Proposer
	session  *client.Session
	sh       *mvcc.Shard
	tso      RevisionAllocator
	leases   mvcc.LeaseChecker
	lg       *zap.Logger
	// lock returns the lock of a transaction across shards that the shard
	// holds as applied here (nil: none). While it holds one, or one is
	// being proposed, the sequencer proposes no write: the shard is frozen.
	lock func() *basaltpb.LockCommand

	reqc      chan *writeReq
	lockc     chan *lockReq
	splitc    chan *splitReq
	kickc     chan struct{}
	completec chan *inflightBatch
	stopc     chan struct{}
	wg        sync.WaitGroup

	mu         sync.Mutex
	inflight   []*inflightBatch // proposed, not yet applied; revision order
	latches    *latchSet        // write spans of inflight
	allocating bool
	changed    chan struct{} // closed and replaced when inflight or allocating change
	waiting    []*writeReq   // deferred until what they read is applied
	stopped    bool
	// locking is the lock being proposed (nil: none); locks waits for the
	// shard's lock to go, in arrival order (run goroutine only).
	locking *basaltpb.LockCommand
	locks   []*lockReq
	// held and blocked are the latches of one pass of sequence, kept
	// between passes for their room (run goroutine only).
	held, blocked *latchSet

	// pending maps the revision of every proposed write to its request,
	// until apply reports its outcome (Applied).
	pendingMu sync.Mutex
	pending   map[int64]*writeReq

	// heldForSync counts the writes gather holds for the end of a sync.
	heldForSync atomic.Int64
}

type writeReq struct {
	ctx   context.Context
	txn   *pb.TxnRequest
	enc   entryTxn // txn prepared for the entry by the caller's goroutine
	shape txnShape
	done  chan writeResult
	// revoke, when not zero, makes this the deletion of every key attached
	// to that lease; its transaction is built when it is evaluated.
	revoke int64
}

type writeResult struct {
	resp *pb.TxnResponse
	err  error
}

type inflightBatch struct {
	first, last int64
	reqs        []*writeReq
	rs          *dragonboat.RequestState
}

// NewSequencer starts the sequencer of one shard.
func NewSequencer(cfg SequencerConfig, shardID uint64, proposer Proposer, session *client.Session, sh *mvcc.Shard, tso RevisionAllocator, leases mvcc.LeaseChecker, lock func() *basaltpb.LockCommand, lg *zap.Logger) *Sequencer {
	cfg.setDefaults()
	s := &Sequencer{
		cfg: cfg, shardID: shardID, proposer: proposer, session: session, sh: sh, tso: tso, leases: leases, lock: lock,
		lg:        lg.With(zap.Uint64("shard-id", shardID)),
		reqc:      make(chan *writeReq, cfg.QueueSize),
		lockc:     make(chan *lockReq),
		splitc:    make(chan *splitReq),
		kickc:     make(chan struct{}, 1),
		completec: make(chan *inflightBatch, cfg.MaxInflight),
		stopc:     make(chan struct{}),
		latches:   newLatchSet(),
		held:      newLatchSet(),
		blocked:   newLatchSet(),
		changed:   make(chan struct{}),
		pending:   make(map[int64]*writeReq),
	}
	s.wg.Add(2)
	go s.run()
	go s.complete()
	return s
}

// Stop fails every pending write with ErrStopped and waits for the
// sequencer's goroutines. A write already proposed may still be applied.
func (s *Sequencer) Stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	s.mu.Unlock()
	close(s.stopc)
	s.wg.Wait()

	s.mu.Lock()
	var pending []*writeReq
	for _, b := range s.inflight {
		pending = append(pending, s.takePending(b.first, len(b.reqs))...)
	}
	pending = append(pending, s.waiting...)
	s.inflight, s.waiting = nil, nil
	s.broadcastLocked()
	s.mu.Unlock()
	for {
		select {
		case r := <-s.reqc:
			pending = append(pending, r)
			continue
		default:
		}
		break
	}
	for _, r := range pending {
		r.done <- writeResult{err: ErrStopped}
	}
	for _, l := range s.locks {
		l.done <- lockResult{err: ErrStopped}
	}
	s.locks = nil
}

// Write sequences a write transaction and returns its response once it is
// applied. ErrNoWrite means the chosen branch changes nothing: the caller
// answers it as a read.
func (s *Sequencer) Write(ctx context.Context, txn *pb.TxnRequest) (*pb.TxnResponse, error) {
	enc, err := encodeTxn(txn)
	if err != nil {
		return nil, err
	}
	return s.submit(&writeReq{ctx: ctx, txn: txn, enc: enc, shape: shapeOf(txn), done: make(chan writeResult, 1)})
}

// RevokeLease deletes, at one revision, every key of the shard attached to
// lease (DELETE events in key order, as etcd). It runs after every put with
// the lease sequenced before it; the caller has removed the lease from the
// meta group first, so puts sequenced after it fail. A key whose lease
// changed meanwhile is left alone. ErrNoWrite means there was no key.
func (s *Sequencer) RevokeLease(ctx context.Context, lease int64) (*pb.TxnResponse, error) {
	return s.submit(&writeReq{ctx: ctx, revoke: lease, done: make(chan writeResult, 1), shape: txnShape{
		conditional: true, leaseReads: []int64{lease}, leaseWrites: []int64{lease},
	}})
}

func (s *Sequencer) submit(r *writeReq) (*pb.TxnResponse, error) {
	ctx := r.ctx
	select {
	case s.reqc <- r:
	case <-s.stopc:
		return nil, ErrStopped
	default:
		return nil, ErrBusy
	}
	var res writeResult
	select {
	case res = <-r.done:
	case <-ctx.Done():
		// The write may still be applied; the caller cannot know.
		return nil, ctx.Err()
	case <-s.stopc:
		// Stop answers what it finds queued; a write queued after that
		// is answered here.
		select {
		case res = <-r.done:
		default:
			return nil, ErrStopped
		}
	}
	return res.resp, res.err
}

// WaitResolved returns once every write of the shard at or below rev is
// applied (or failed), no allocation is under way that could return such a
// revision, and no lock of a transaction across shards is held or being
// taken that could commit at or below rev.
func (s *Sequencer) WaitResolved(ctx context.Context, rev int64) error {
	for {
		s.mu.Lock()
		blocked := s.allocating || (len(s.inflight) > 0 && s.inflight[0].first <= rev) ||
			lockBlocks(s.lock(), rev) || lockBlocks(s.locking, rev)
		changed, stopped := s.changed, s.stopped
		s.mu.Unlock()
		if !blocked {
			return nil
		}
		if stopped {
			return ErrStopped
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stopc:
			return ErrStopped
		}
	}
}

// Idle reports whether no batch is being allocated or waits for apply, and
// the shard is not frozen by a lock.
func (s *Sequencer) Idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.allocating && len(s.inflight) == 0 && !s.frozenLocked()
}

// frozenLocked reports whether the shard holds a lock or one is being
// proposed: then no write is proposed.
func (s *Sequencer) frozenLocked() bool { return s.locking != nil || s.lock() != nil }

// LockChanged wakes the sequencer after the shard took or dropped a lock:
// waiting writes and locks may go, and readers look again.
func (s *Sequencer) LockChanged() {
	s.mu.Lock()
	s.broadcastLocked()
	s.mu.Unlock()
	s.kick()
}

// broadcastLocked wakes WaitResolved callers.
func (s *Sequencer) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Sequencer) run() {
	defer s.wg.Done()
	var incoming []*writeReq
	for {
		incoming = incoming[:0]
		select {
		case <-s.stopc:
			return
		case r := <-s.reqc:
			incoming = s.drain(append(incoming, r))
		case <-s.kickc:
		case r := <-s.splitc:
			r.done <- s.split(r)
		case l := <-s.lockc:
			s.locks = append(s.locks, l)
		}
		if len(incoming) > 0 && len(incoming) < s.cfg.MaxBatch && s.hasInflight() {
			if end := s.cfg.Gate.inSync(); end != nil {
				incoming = s.gather(incoming, end)
			}
		}
		s.sequence(incoming)
		s.proposeLocks()
	}
}

// drain adds the queued writes to incoming, up to a full batch, without
// waiting.
func (s *Sequencer) drain(incoming []*writeReq) []*writeReq {
	for len(incoming) < s.cfg.MaxBatch {
		select {
		case r := <-s.reqc:
			incoming = append(incoming, r)
		default:
			return incoming
		}
	}
	return incoming
}

// hasInflight reports whether a batch is proposed and not yet applied.
func (s *Sequencer) hasInflight() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.inflight) > 0
}

// gather adds the writes that arrive until end is closed to incoming, up to
// a full batch.
func (s *Sequencer) gather(incoming []*writeReq, end <-chan struct{}) []*writeReq {
	defer s.heldForSync.Store(0)
	for len(incoming) < s.cfg.MaxBatch {
		s.heldForSync.Store(int64(len(incoming)))
		select {
		case r := <-s.reqc:
			incoming = append(incoming, r)
		case <-end:
			// Take what arrived with the end too.
			return s.drain(incoming)
		case <-s.stopc:
			return incoming
		}
	}
	return incoming
}

// splitReq asks the sequencer to split its shard.
type splitReq struct {
	ctx  context.Context
	cmd  []byte // the encoded SplitCommand
	done chan error
}

// Split splits the shard through its Raft log (cmd is an encoded
// DataCommand holding a SplitCommand). The sequencer proposes nothing else
// meanwhile: it first waits until every batch it proposed is applied, so
// that no write to the keys leaving the shard is still on its way, and
// writes that arrive afterwards are checked against the new span.
func (s *Sequencer) Split(ctx context.Context, cmd []byte) error {
	r := &splitReq{ctx: ctx, cmd: cmd, done: make(chan error, 1)}
	select {
	case s.splitc <- r:
	case <-s.stopc:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-r.done
}

func (s *Sequencer) split(r *splitReq) error {
	if err := s.WaitResolved(r.ctx, math.MaxInt64); err != nil {
		return err
	}
	timeout := min(timeoutOf(r.ctx), s.cfg.ProposalTimeout)
	rs, err := s.proposer.Propose(s.session, r.cmd, timeout)
	if err != nil {
		return err
	}
	defer rs.Release()
	var res dragonboat.RequestResult
	select {
	case res = <-rs.AppliedC():
	case <-s.stopc:
		return ErrStopped
	}
	if err := batchError(res); err != nil {
		return err
	}
	var out basaltpb.MetaResult
	if err := proto.Unmarshal(res.GetResult().Data, &out); err != nil {
		return fmt.Errorf("shard: undecodable split result: %w", err)
	}
	return codeError(out.Error)
}

// sequence admits the waiting writes (oldest first) and the incoming ones,
// and proposes those that write.
func (s *Sequencer) sequence(incoming []*writeReq) {
	s.mu.Lock()
	if s.frozenLocked() {
		// Proposed after the lock's transaction commits or aborts.
		s.waiting = append(s.waiting, incoming...)
		s.mu.Unlock()
		return
	}
	candidates := append(s.waiting, incoming...)
	s.waiting = nil
	s.mu.Unlock()

	var (
		batch   []*writeReq
		size    int
		held    = s.held    // write spans of this batch
		blocked = s.blocked // spans of writes deferred in this pass
	)
	held.reset()
	blocked.reset()
	defer func() {
		if len(batch) > 0 {
			s.propose(batch)
		}
	}()
	for i, r := range candidates {
		if len(batch) >= s.cfg.MaxBatch || size+r.enc.size > s.cfg.MaxBatchBytes && len(batch) > 0 {
			// The rest waits for the next pass.
			s.mu.Lock()
			s.waiting = append(s.waiting, candidates[i:]...)
			s.mu.Unlock()
			s.kick()
			return
		}
		if r.ctx.Err() != nil {
			r.done <- writeResult{err: r.ctx.Err()}
			continue
		}
		if r.revoke == 0 && !s.sh.ContainsTxn(r.txn) {
			r.done <- writeResult{err: ErrWrongShard}
			continue
		}
		// Keep arrival order among writes that touch the same keys: a write
		// never overtakes an earlier one that is waiting.
		if blocked.conflictsWithAny(&r.shape) {
			s.deferWrite(r, blocked)
			continue
		}
		if r.shape.conditional {
			// Check and defer under one lock hold: finish releases latches
			// and looks for waiting writes under it too, so a write never
			// waits for a batch that already finished.
			s.mu.Lock()
			if s.latches.conflictsWithReads(&r.shape) || held.conflictsWithReads(&r.shape) {
				s.deferWriteLocked(r, blocked)
				s.mu.Unlock()
				continue
			}
			s.mu.Unlock()
			if r.revoke != 0 {
				ready, err := s.prepareRevoke(r, held, blocked)
				if err != nil {
					r.done <- writeResult{err: err}
					continue
				}
				if !ready {
					continue // deferred
				}
			} else if err := s.evaluate(r); err != nil {
				r.done <- writeResult{err: err}
				continue
			}
		}
		batch = append(batch, r)
		size += r.enc.size
		held.holdWrites(&r.shape)
	}
}

func (s *Sequencer) deferWrite(r *writeReq, blocked *latchSet) {
	s.mu.Lock()
	s.deferWriteLocked(r, blocked)
	s.mu.Unlock()
}

func (s *Sequencer) deferWriteLocked(r *writeReq, blocked *latchSet) {
	blocked.holdAll(&r.shape)
	s.waiting = append(s.waiting, r)
}

func (s *Sequencer) kick() {
	select {
	case s.kickc <- struct{}{}:
	default:
	}
}

// evaluate decides a conditional write against the applied state, which no
// pending write touches where it reads: nil when it writes, the error to
// answer otherwise (ErrNoWrite when it changes nothing).
func (s *Sequencer) evaluate(r *writeReq) error {
	view := s.sh.View()
	if r.shape.readRev > view.Rev() {
		// The shard's newest write may be older than the cluster's
		// revision (other shards took the revisions in between): whether a
		// read at that revision is in the future is the TSO's to say. The
		// shard has no write between its revision and the TSO's current
		// one that this transaction reads (none is pending on its keys).
		cur, err := s.tso.Current(r.ctx)
		if err != nil {
			return err
		}
		view = s.sh.ViewAt(max(cur, view.Rev()))
	}
	path := mvcc.TxnPath(r.ctx, view, r.txn)
	if err := mvcc.CheckTxn(r.ctx, view, r.txn, s.leases, path); err != nil {
		return err
	}
	writes, err := mvcc.PathWrites(r.ctx, view, r.txn, path)
	if err != nil {
		return err
	}
	if !writes {
		return ErrNoWrite
	}
	return nil
}

// prepareRevoke builds the transaction of a lease revocation from the keys
// attached to the lease: for each key, in key order, a nested transaction
// that deletes it if it still has the lease when applied. No put with the
// lease is pending (the caller checked its lease latch), but other writes
// to those keys may be: then it is deferred until they applied, so that at
// apply every key still has the lease and the revision deletes them all.
func (s *Sequencer) prepareRevoke(r *writeReq, held, blocked *latchSet) (ready bool, err error) {
	keys, err := s.sh.LeaseKeys(r.revoke)
	if err != nil {
		return false, err
	}
	if len(keys) == 0 {
		return false, ErrNoWrite
	}
	spans := make([]span, len(keys))
	for i, k := range keys {
		spans[i] = span{start: k}
	}
	r.shape.reads, r.shape.writes = spans, spans
	// Check and defer under one lock hold, as for other conditional writes.
	s.mu.Lock()
	if s.latches.overlaps(spans) || held.overlaps(spans) {
		s.deferWriteLocked(r, blocked)
		s.mu.Unlock()
		return false, nil
	}
	s.mu.Unlock()
	// A write to one of the keys may have applied between the two looks;
	// none can start now (only this goroutine proposes), so a second look
	// that agrees is final.
	again, err := s.sh.LeaseKeys(r.revoke)
	if err != nil {
		return false, err
	}
	if !slices.EqualFunc(keys, again, bytes.Equal) {
		s.deferWrite(r, blocked)
		s.kick() // what changed them has finished: look again at once
		return false, nil
	}
	txn := &pb.TxnRequest{Success: make([]*pb.RequestOp, len(keys))}
	for i, k := range keys {
		txn.Success[i] = &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: k, Target: pb.Compare_LEASE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Lease{Lease: r.revoke}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: k}}}},
		}}}
	}
	data, err := proto.Marshal(txn)
	if err != nil {
		return false, err
	}
	r.txn, r.enc = txn, entryTxn{data: data, size: len(data)}
	return true, nil
}

// propose takes revisions for the batch and proposes it as one entry.
func (s *Sequencer) propose(batch []*writeReq) {
	s.mu.Lock()
	s.allocating = true
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ProposalTimeout)
	first, err := s.tso.Allocate(ctx, len(batch))
	cancel()
	var rs *dragonboat.RequestState
	if err == nil {
		txns := make([]entryTxn, len(batch))
		for i, r := range batch {
			txns[i] = r.enc
		}
		data := encodeWriteBatch(first, txns)
		// Registered before proposing: apply may report before Propose
		// returns.
		s.pendingMu.Lock()
		for i, r := range batch {
			s.pending[first+int64(i)] = r
		}
		s.pendingMu.Unlock()
		if rs, err = s.proposer.Propose(s.session, data, s.cfg.ProposalTimeout); err != nil {
			s.takePending(first, len(batch))
		}
	}

	s.mu.Lock()
	s.allocating = false
	if err == nil {
		b := &inflightBatch{first: first, last: first + int64(len(batch)) - 1, reqs: batch, rs: rs}
		s.inflight = append(s.inflight, b)
		for _, r := range batch {
			s.latches.holdWrites(&r.shape)
		}
		s.broadcastLocked()
		s.mu.Unlock()
		select {
		case s.completec <- b:
		case <-s.stopc:
		}
		return
	}
	s.broadcastLocked()
	s.mu.Unlock()
	s.lg.Warn("propose-failed", zap.Int("writes", len(batch)), zap.Error(err))
	for _, r := range batch {
		r.done <- writeResult{err: err}
	}
	s.kick() // writes deferred behind this batch may go now
}

// complete waits for proposed batches in order and answers their writes.
func (s *Sequencer) complete() {
	defer s.wg.Done()
	for {
		var b *inflightBatch
		select {
		case b = <-s.completec:
		case <-s.stopc:
			return
		}
		var res dragonboat.RequestResult
		select {
		case res = <-b.rs.AppliedC():
		case <-s.stopc:
			return
		}
		s.finish(b, res)
	}
}

// Applied answers a write that apply reports on; the data state machine
// calls it after the writes are committed.
func (s *Sequencer) Applied(rev int64, resp *pb.TxnResponse, err error) {
	s.pendingMu.Lock()
	r, ok := s.pending[rev]
	delete(s.pending, rev)
	s.pendingMu.Unlock()
	if ok {
		r.done <- writeResult{resp: resp, err: err}
	}
}

// LeadershipLost answers every write still waiting for apply with
// ErrLeaderChanged: this replica no longer leads, and a proposal it made may
// never commit (a deposed leader's entries wait for their timeout) or may
// commit under the new leader. Either way the outcome is unknown, as etcd
// answers requests pending across a leader change.
func (s *Sequencer) LeadershipLost() {
	s.pendingMu.Lock()
	lost := s.pending
	s.pending = make(map[int64]*writeReq)
	s.pendingMu.Unlock()
	for _, r := range lost {
		r.done <- writeResult{err: ErrLeaderChanged}
	}
}

// Proposed returns the transaction this sequencer proposed at rev, if any.
func (s *Sequencer) Proposed(rev int64) *pb.TxnRequest {
	s.pendingMu.Lock()
	r, ok := s.pending[rev]
	s.pendingMu.Unlock()
	if !ok {
		return nil
	}
	return r.txn
}

// takePending removes the writes of revisions [first, first+n) that apply
// has not answered.
func (s *Sequencer) takePending(first int64, n int) []*writeReq {
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	var out []*writeReq
	for rev := first; rev < first+int64(n); rev++ {
		if r, ok := s.pending[rev]; ok {
			out = append(out, r)
			delete(s.pending, rev)
		}
	}
	return out
}

// finish releases a batch once dragonboat reports it applied (or failed):
// writes apply did not answer get the batch's error.
func (s *Sequencer) finish(b *inflightBatch, res dragonboat.RequestResult) {
	b.rs.Release()
	if left := s.takePending(b.first, len(b.reqs)); len(left) > 0 {
		err := batchError(res)
		if err == nil {
			err = fmt.Errorf("shard: writes at revisions %d..%d applied without an outcome", b.first, b.last)
		}
		for _, r := range left {
			r.done <- writeResult{err: err}
		}
	}
	s.mu.Lock()
	for _, r := range b.reqs {
		s.latches.releaseWrites(&r.shape)
	}
	s.inflight = s.inflight[1:]
	waiting := len(s.waiting) > 0
	s.broadcastLocked()
	s.mu.Unlock()
	if waiting {
		s.kick()
	}
}

// batchError is the error of a proposal that did not complete.
func batchError(res dragonboat.RequestResult) error {
	switch {
	case res.Completed():
		return nil
	case res.Timeout():
		return dragonboat.ErrTimeout
	case res.Terminated():
		return dragonboat.ErrShardClosed
	case res.Dropped():
		return dragonboat.ErrShardNotReady
	case res.Rejected():
		return dragonboat.ErrRejected
	}
	return dragonboat.ErrAborted
}

// IsRetryable reports whether a write failed before it could have been
// applied, so that sending it again cannot apply it twice.
func IsRetryable(err error) bool {
	return errors.Is(err, ErrStaleRevision) || errors.Is(err, ErrNotLeader) || errors.Is(err, ErrBusy) || errors.Is(err, ErrWrongShard) ||
		errors.Is(err, ErrLocked) || errors.Is(err, ErrTxnAborted) ||
		errors.Is(err, dragonboat.ErrShardNotReady) || errors.Is(err, dragonboat.ErrSystemBusy) ||
		errors.Is(err, dragonboat.ErrShardNotFound)
}

// lockReq asks the sequencer to lock the shard for a transaction across
// shards.
type lockReq struct {
	ctx  context.Context
	lock *basaltpb.LockCommand
	cmd  []byte // the encoded DataCommand
	done chan lockResult
	// state is lockWaiting until the sequencer proposes the lock
	// (lockProposing) or its caller gives up first (lockAbandoned).
	state atomic.Int32
}

const (
	lockWaiting int32 = iota
	lockProposing
	lockAbandoned
)

type lockResult struct {
	res *basaltpb.TxnResult
	err error
}

// Lock proposes a transaction's lock after every batch proposed before it,
// once the shard holds no other lock (locks are taken in arrival order).
func (s *Sequencer) Lock(ctx context.Context, l *basaltpb.LockCommand, cmd []byte) (*basaltpb.TxnResult, error) {
	r := &lockReq{ctx: ctx, lock: l, cmd: cmd, done: make(chan lockResult, 1)}
	select {
	case s.lockc <- r:
	case <-s.stopc:
		return nil, ErrStopped
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case res := <-r.done:
		return res.res, res.err
	case <-ctx.Done():
		if r.state.CompareAndSwap(lockWaiting, lockAbandoned) {
			return nil, ctx.Err() // never to be proposed
		}
		// Being proposed: wait for the outcome (the proposal's timeout
		// bounds it), so that an abort the caller sends next follows the
		// lock in the log instead of passing it and leaving the shard
		// frozen until the lock's TTL.
		res := <-r.done
		return res.res, res.err
	}
}

// proposeLocks proposes the waiting locks while the shard holds none,
// each after the batches proposed before it, and waits for its apply.
func (s *Sequencer) proposeLocks() {
	for len(s.locks) > 0 {
		s.mu.Lock()
		if s.frozenLocked() {
			s.mu.Unlock()
			return
		}
		r := s.locks[0]
		s.locks = s.locks[1:]
		if r.ctx.Err() != nil || !r.state.CompareAndSwap(lockWaiting, lockProposing) {
			s.mu.Unlock()
			r.done <- lockResult{err: r.ctx.Err()} // its caller left
			continue
		}
		s.locking = r.lock
		s.broadcastLocked()
		s.mu.Unlock()

		res, err := s.proposeLock(r)

		s.mu.Lock()
		s.locking = nil
		s.broadcastLocked()
		s.mu.Unlock()
		r.done <- lockResult{res: res, err: err}
	}
}

func (s *Sequencer) proposeLock(r *lockReq) (*basaltpb.TxnResult, error) {
	rs, err := s.proposer.Propose(s.session, r.cmd, min(timeoutOf(r.ctx), s.cfg.ProposalTimeout))
	if err != nil {
		return nil, err
	}
	defer rs.Release()
	var res dragonboat.RequestResult
	select {
	case res = <-rs.AppliedC():
	case <-s.stopc:
		return nil, ErrStopped
	}
	if err := batchError(res); err != nil {
		return nil, err
	}
	out := &basaltpb.TxnResult{}
	if err := proto.Unmarshal(res.GetResult().Data, out); err != nil {
		return nil, fmt.Errorf("shard: undecodable lock result: %w", err)
	}
	return out, nil
}
