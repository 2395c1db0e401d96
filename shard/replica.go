package shard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/internal/combine"
	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/proto/basaltpb"
)

// Replica is this node's replica of one data shard: its state machine, and
// while it leads, the sequencer that orders the shard's writes.
type Replica struct {
	shardID   uint64
	replicaID uint64
	nh        *dragonboat.NodeHost
	sm        *DataStateMachine
	seq       *Sequencer
	lg        *zap.Logger

	leader atomic.Uint64 // replica id of the leader as last reported; 0 unknown
	term   atomic.Uint64

	barrier *combine.Combiner[*barrierWaiter]
	remote  atomic.Pointer[RemoteResolver]

	lockResolver  atomic.Pointer[LockResolver]
	resolvingLock atomic.Bool // a resolution of an expired lock runs

	tso      RevisionAllocator
	resolvec chan struct{}
	stopc    chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// NewReplica wires a replica started on nh to its sequencer, once its state
// machine is open.
func NewReplica(ctx context.Context, nh *dragonboat.NodeHost, sm *DataStateMachine, tso RevisionAllocator, leases mvcc.LeaseChecker, cfg SequencerConfig, lg *zap.Logger) (*Replica, error) {
	select {
	case <-sm.opened:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	user, err := nh.GetNodeUser(sm.shardID)
	if err != nil {
		return nil, err
	}
	r := &Replica{shardID: sm.shardID, replicaID: sm.replicaID, nh: nh, sm: sm, lg: lg, tso: tso,
		resolvec: make(chan struct{}, 1), stopc: make(chan struct{})}
	r.barrier = combine.New(r.serveBarrier)
	r.seq = NewSequencer(cfg, sm.shardID, user, nh.GetNoOPSession(sm.shardID), sm.Shard(), tso, leases, sm.PendingLock, lg)
	sm.SetSink(r.seq)
	r.startResolver()
	return r, nil
}

// Stop stops the sequencer and the resolver.
func (r *Replica) Stop() {
	r.stopOnce.Do(func() {
		close(r.stopc)
		r.wg.Wait()
		r.sm.SetObserver(nil)
	})
	r.seq.Stop()
}

// ShardID returns the shard's id.
func (r *Replica) ShardID() uint64 { return r.shardID }

// Shard returns the replica's mvcc shard.
func (r *Replica) Shard() *mvcc.Shard { return r.sm.Shard() }

// SetLeader records a leadership change reported by Raft.
func (r *Replica) SetLeader(leaderID, term uint64) {
	old := r.leader.Swap(leaderID)
	r.term.Store(term)
	if old == r.replicaID && leaderID != r.replicaID {
		r.seq.LeadershipLost()
	}
}

// Leader returns the leader's replica id (0 when unknown) and the term.
func (r *Replica) Leader() (uint64, uint64) { return r.leader.Load(), r.term.Load() }

// IsLeader reports whether this replica leads its shard, as last reported.
func (r *Replica) IsLeader() bool { return r.leader.Load() == r.replicaID }

// checkLeader returns a NotLeaderError naming the leader unless this
// replica leads.
func (r *Replica) checkLeader() error {
	if leader := r.leader.Load(); leader != r.replicaID {
		return &NotLeaderError{ShardID: r.shardID, Leader: leader}
	}
	return nil
}

// Write sequences a write transaction on the leader.
func (r *Replica) Write(ctx context.Context, txn *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := r.checkLeader(); err != nil {
		return nil, err
	}
	return r.seq.Write(ctx, txn)
}

// RevokeLease deletes the shard's keys attached to lease (on the leader).
func (r *Replica) RevokeLease(ctx context.Context, lease int64) (*pb.TxnResponse, error) {
	if err := r.checkLeader(); err != nil {
		return nil, err
	}
	return r.seq.RevokeLease(ctx, lease)
}

// ReadAt returns a view of the shard at rev, a revision from the TSO, for a
// linearizable read at one revision across shards, on any replica, once
// every write of the shard at or below rev is applied here. The leader
// waits for its sequencer, then confirms its leadership (ResolveAsLeader).
// A follower asks the leader to do that (SetRemoteResolver), then runs a
// ReadIndex, which applies here what the leader had; without an answer it
// waits until its own log shows the shard resolved at rev (the leader's
// resolver proposes a marker at least every 100 ms while the shard is
// idle).
func (r *Replica) ReadAt(ctx context.Context, rev int64) (*mvcc.ReadView, error) {
	if r.sm.Resolved() >= rev {
		return r.sm.Shard().ViewAt(rev), nil
	}
	err := r.ResolveAsLeader(ctx, rev)
	if leader := LeaderElsewhere(err); leader != 0 {
		if remote := r.remote.Load(); remote != nil && r.resolveRemote(ctx, *remote, leader, rev) == nil {
			err = r.readIndex(ctx)
		}
	}
	if err == nil {
		return r.sm.Shard().ViewAt(rev), nil
	}
	if err := r.sm.waitResolved(ctx, rev); err != nil {
		return nil, err
	}
	return r.sm.Shard().ViewAt(rev), nil
}

// resolveRemote asks the leader to resolve rev, for at most a
// readIndexAttempt: past it, the follower waits for its own log instead.
func (r *Replica) resolveRemote(ctx context.Context, remote RemoteResolver, leader uint64, rev int64) error {
	ctx, cancel := context.WithTimeout(ctx, readIndexAttempt)
	defer cancel()
	return remote(ctx, leader, r.shardID, rev)
}

// ResolveAsLeader returns once this replica, the leader, has applied every
// write of the shard at or below rev and confirmed its leadership in the
// same term. Otherwise it fails with a NotLeaderError.
func (r *Replica) ResolveAsLeader(ctx context.Context, rev int64) error {
	leader, term := r.Leader()
	if leader != r.replicaID {
		return &NotLeaderError{ShardID: r.shardID, Leader: leader}
	}
	if err := r.seq.WaitResolved(ctx, rev); err != nil {
		return err
	}
	if err := r.readIndex(ctx); err != nil {
		return err
	}
	// A lock the previous leader took may have been applied here only now:
	// its transaction may commit at or below rev.
	if err := r.sm.waitUnlocked(ctx, rev); err != nil {
		return err
	}
	if l, t := r.Leader(); l != leader || t != term {
		// Leadership moved meanwhile: the new leader may have sequenced
		// writes at or below rev that this sequencer does not know of.
		return &NotLeaderError{ShardID: r.shardID, Leader: l}
	}
	return nil
}

// RemoteResolver asks a shard's leader on another member to resolve a
// revision (ResolveAsLeader there).
type RemoteResolver func(ctx context.Context, leader, shardID uint64, rev int64) error

// SetRemoteResolver lets a follower ask the leader to resolve revisions it
// reads at.
func (r *Replica) SetRemoteResolver(f RemoteResolver) { r.remote.Store(&f) }

// Resolved returns the shard's resolved revision on this replica: every
// write of the shard at or below it is applied here. An idle leader knows
// more than its log: no write of its shard is under way, so every revision
// the TSO handed out so far that is the shard's is applied.
func (r *Replica) Resolved() int64 {
	rev := r.sm.Resolved()
	seen, ok := r.tso.(interface{ Seen() int64 })
	if !ok || !r.IsLeader() {
		return rev
	}
	// Seen first: an allocation that starts after it returns revisions
	// above it, and one that started before keeps the sequencer busy until
	// its batch is applied.
	s := seen.Seen()
	if r.seq.Idle() {
		rev = max(rev, s)
	}
	return rev
}

// Sync returns once this replica has applied everything its shard
// committed before the call (a ReadIndex, which followers can run too).
func (r *Replica) Sync(ctx context.Context) error { return r.readIndex(ctx) }

// ReadLatest returns a view of the replica's applied state for a
// linearizable read of this shard alone, on any replica: a ReadIndex
// (through the leader, which confirms its leadership) waits until this
// replica has applied everything committed before the call, so every write
// acknowledged before it is visible. Writes apply in revision order, so the
// applied state is the shard at its newest applied revision.
func (r *Replica) ReadLatest(ctx context.Context) (*mvcc.ReadView, error) {
	if err := r.readIndex(ctx); err != nil {
		return nil, err
	}
	return r.View(), nil
}

// View returns a view of the replica's applied state, for serializable
// reads: no Raft round trip, possibly behind the leader.
func (r *Replica) View() *mvcc.ReadView { return r.sm.Shard().View() }

// readIndex confirms leadership for a read. Concurrent reads share one
// ReadIndex: a read joins the next one issued after it arrived, never one
// already in flight, which may predate writes acknowledged before it.
func (r *Replica) readIndex(ctx context.Context) error {
	b := &barrierWaiter{done: make(chan error, 1)}
	r.barrier.Submit(b)
	select {
	case err := <-b.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

type barrierWaiter struct{ done chan error }

// serveBarrier issues one ReadIndex for a batch of reads.
func (r *Replica) serveBarrier(batch []*barrierWaiter) {
	ctx, cancel := context.WithTimeout(context.Background(), readIndexTimeout)
	err := ReadIndex(ctx, r.nh, r.shardID)
	cancel()
	for _, b := range batch {
		b.done <- err
	}
}

// readIndexTimeout bounds one ReadIndex.
const readIndexTimeout = 10 * time.Second

// ReadIndex runs dragonboat's ReadIndex on a group and waits until this
// replica has applied everything committed when it was issued. A request
// that gets no answer within readIndexAttempt (its message to the leader
// was lost, or the leader changed) is issued again until ctx ends.
func ReadIndex(ctx context.Context, nh *dragonboat.NodeHost, shardID uint64) error {
	for {
		err := readIndexOnce(ctx, nh, shardID)
		if !errors.Is(err, dragonboat.ErrTimeout) || ctx.Err() != nil {
			return err
		}
	}
}

// readIndexAttempt bounds one ReadIndex request.
const readIndexAttempt = time.Second

func readIndexOnce(ctx context.Context, nh *dragonboat.NodeHost, shardID uint64) error {
	ctx, cancel := context.WithTimeout(ctx, readIndexAttempt)
	defer cancel()
	rs, err := nh.ReadIndex(shardID, timeoutOf(ctx))
	if err != nil {
		return err
	}
	defer rs.Release()
	select {
	case res := <-rs.ResultC():
		if res.Completed() {
			return nil
		}
		if res.Dropped() {
			return dragonboat.ErrShardNotReady
		}
		return dragonboat.ErrTimeout
	case <-ctx.Done():
		return dragonboat.ErrTimeout
	}
}

// Split splits the shard at key through its Raft log (on the leader): the
// shard keeps [start, key) and shard childID takes [key, end), starting on
// this shard's replicas (voters as voters; non-voting ones join it as
// such, added here once the child runs). It returns the child's
// descriptor.
func (r *Replica) Split(ctx context.Context, key []byte, childID uint64) (*basaltpb.ShardDescriptor, error) {
	if err := r.checkLeader(); err != nil {
		return nil, err
	}
	if !r.Shard().Contains(key) {
		return nil, ErrWrongShard
	}
	ctx, cancel := context.WithTimeout(ctx, timeoutOf(ctx))
	defer cancel()
	members, err := r.nh.SyncGetShardMembership(ctx, r.shardID)
	if err != nil {
		return nil, err
	}
	sp := &basaltpb.SplitCommand{Key: key, ChildId: childID, Replicas: members.Nodes, NonVoting: members.NonVotings}
	cmd, err := proto.Marshal(&basaltpb.DataCommand{Command: &basaltpb.DataCommand_Split{Split: sp}})
	if err != nil {
		return nil, err
	}
	if err := r.seq.Split(ctx, cmd); err != nil {
		return nil, err
	}
	for id, addr := range sp.NonVoting {
		if err := r.addNonVoting(ctx, childID, id, addr); err != nil {
			return nil, fmt.Errorf("shard: add non-voting replica %x to shard %d: %w", id, childID, err)
		}
	}
	_, end, _, err := r.sm.store.SpanOf(childID)
	if err != nil {
		return nil, err
	}
	return &basaltpb.ShardDescriptor{ShardId: childID, Start: key, End: end, Replicas: childReplicas(sp), Epoch: 1}, nil
}

// addNonVoting adds a non-voting replica to a new shard, through this
// node's replica of it, once that runs.
func (r *Replica) addNonVoting(ctx context.Context, shardID, replicaID uint64, addr string) error {
	for {
		err := r.nh.SyncRequestAddNonVoting(ctx, shardID, replicaID, addr, 0)
		if !errors.Is(err, dragonboat.ErrShardNotFound) && !errors.Is(err, dragonboat.ErrShardNotReady) {
			return err
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return err
		}
	}
}

// Compact compacts the shard at rev through its Raft log, on any replica.
// It first waits until every write of the shard at or below rev is applied
// (on the leader, by its sequencer; on a follower, as its log shows), so
// that none lands in the log behind the compaction. It returns
// mvcc.ErrCompacted when the shard is already compacted at or above rev.
func (r *Replica) Compact(ctx context.Context, rev int64) error {
	if r.IsLeader() {
		if err := r.seq.WaitResolved(ctx, rev); err != nil {
			return err
		}
	} else if err := r.sm.waitResolved(ctx, rev); err != nil {
		return err
	}
	cmd, err := proto.Marshal(&basaltpb.DataCommand{Command: &basaltpb.DataCommand_Compact{Compact: &basaltpb.CompactCommand{Revision: rev}}})
	if err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	res, err := r.nh.SyncPropose(ctx, r.nh.GetNoOPSession(r.shardID), cmd)
	if err != nil {
		return err
	}
	var out basaltpb.CompactResult
	if err := proto.Unmarshal(res.Data, &out); err != nil {
		return fmt.Errorf("shard: undecodable compact result: %w", err)
	}
	return codeError(out.Error)
}

// timeoutOf is the time left before ctx's deadline, or a default.
func timeoutOf(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		if t := time.Until(d); t > 0 {
			return t
		}
		return time.Millisecond
	}
	return 10 * time.Second
}
