package txncoord

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"

	"github.com/basaltdb/basalt/internal/combine"
	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/proto/basaltpb"
	"github.com/basaltdb/basalt/shard"
)

// Shards finds the replica that serves a shard's requests, and records
// splits in the meta group.
type Shards interface {
	Replica(shardID uint64) (*shard.Replica, error)
	// AllocShardID returns a shard id never used before.
	AllocShardID(ctx context.Context) (uint64, error)
	// RecordSplit records in the meta group that parentID split off child.
	RecordSplit(ctx context.Context, parentID uint64, child *basaltpb.ShardDescriptor) error
}

// Revisions is the TSO as the coordinator uses it.
type Revisions interface {
	Current(ctx context.Context) (int64, error)
	Allocate(ctx context.Context, n int) (int64, error)
}

// Coordinator runs etcd's KV operations over the shards: it routes each
// request to the shard that owns its keys, takes read revisions from the
// TSO, sends writes to the shard's sequencer, and answers writes that change
// nothing as reads.
type Coordinator struct {
	tso    Revisions
	cache  *RangeCache
	shards Shards
	meta   MetaGroup
	leases mvcc.LeaseChecker
	peers  Peers
	lg     *zap.Logger
	// lockTTL is the TTL of the locks of transactions across shards.
	lockTTL time.Duration
	// across groups concurrent transactions across shards.
	across *combine.Combiner[*acrossReq]
}

// NewCoordinator returns a coordinator.
func NewCoordinator(tso Revisions, cache *RangeCache, shards Shards, meta MetaGroup, leases mvcc.LeaseChecker, lg *zap.Logger) *Coordinator {
	c := &Coordinator{tso: tso, cache: cache, shards: shards, meta: meta, leases: leases, lg: lg, lockTTL: DefaultLockTTL}
	c.across = combine.New(c.serveAcross)
	return c
}

// SetLockTTL sets the TTL of the locks of transactions across shards that
// this coordinator runs. Call it before serving.
func (c *Coordinator) SetLockTTL(d time.Duration) { c.lockTTL = d }

// SetPeers lets the coordinator reach other members (to revoke a lease's
// keys at their shard's leader). Call it before serving.
func (c *Coordinator) SetPeers(p Peers) { c.peers = p }

// LocalRevision returns the newest revision applied by this node's
// replicas: cheap, not linearizable, for headers that carry no promise
// (lease keep-alives).
func (c *Coordinator) LocalRevision() int64 {
	var rev int64
	for _, d := range c.cache.All() {
		if r, err := c.shards.Replica(d.ShardId); err == nil {
			rev = max(rev, r.Shard().Rev())
		}
	}
	return rev
}

// CurrentRevision returns the cluster's current revision.
func (c *Coordinator) CurrentRevision(ctx context.Context) (int64, error) {
	var rev int64
	err := Retry(ctx, func() (err error) {
		rev, err = c.tso.Current(ctx)
		return err
	})
	return rev, err
}

// Range answers a RangeRequest: linearizable at the cluster's current
// revision, or serializable from the local replicas' applied state.
func (c *Coordinator) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	spans := []keySpan{{r.Key, r.RangeEnd}}
	var resp *pb.RangeResponse
	err := c.retry(ctx, func() error {
		view, err := c.readView(ctx, spans, r.Serializable)
		if err != nil {
			return err
		}
		resp, err = mvcc.ExecuteRange(ctx, view, r)
		return err
	})
	return resp, err
}

// readView returns the view a read of spans runs on, over the local
// replicas of every shard between the first and the last the spans touch.
//
//   - Serializable: the replicas' applied state, at the lowest of their
//     resolved revisions (Replica.Resolved), where each has applied every
//     write at or below it.
//   - Linearizable, when one shard holds the whole key space: that
//     replica's applied state once it has applied everything its shard
//     committed before the read (ReadLatest, on any replica; its revision
//     is the cluster's).
//   - Linearizable otherwise: at R, the TSO's current revision, once each
//     shard has applied every write at or below R (DESIGN §6).
//
// A view whose span does not hold the spans (a shard split meanwhile)
// fails with shard.ErrWrongShard, and the caller retries.
func (c *Coordinator) readView(ctx context.Context, spans []keySpan, serializable bool) (*mvcc.ReadView, error) {
	reps, err := c.replicasCovering(spans)
	if err != nil {
		return nil, err
	}
	view, err := c.viewOf(ctx, reps, serializable)
	if err != nil {
		return nil, err
	}
	for _, s := range spans {
		if !view.ContainsRange(s.key, s.end) {
			return nil, shard.ErrWrongShard
		}
	}
	return view, nil
}

func (c *Coordinator) viewOf(ctx context.Context, reps []*shard.Replica, serializable bool) (*mvcc.ReadView, error) {
	if serializable {
		rev := reps[0].Resolved()
		if len(reps) == 1 {
			return reps[0].Shard().ViewAt(rev), nil
		}
		for _, rep := range reps[1:] {
			rev = min(rev, rep.Resolved())
		}
		return mvcc.ViewAcross(rev, shardsOf(reps))
	}
	if len(reps) == 1 && c.cache.Len() == 1 {
		view, err := reps[0].ReadLatest(ctx)
		if err != nil {
			return nil, err
		}
		if view.WholeKeySpace() {
			return view, nil
		}
		// The shard split since the cache was loaded: its applied revision
		// is no longer the cluster's.
	}
	rev, err := c.tso.Current(ctx)
	if err != nil {
		return nil, err
	}
	for _, rep := range reps {
		if _, err := rep.ReadAt(ctx, rev); err != nil {
			return nil, err
		}
	}
	return mvcc.ViewAcross(rev, shardsOf(reps))
}

// replicasCovering returns this node's replicas of the shards from the one
// that holds the lowest key of spans to the one that holds the highest, in
// key order (adjacent, so that one view covers them).
func (c *Coordinator) replicasCovering(spans []keySpan) ([]*shard.Replica, error) {
	lo, hi := spans[0].key, spans[0].end
	for _, s := range spans {
		if bytes.Compare(s.key, lo) < 0 {
			lo = s.key
		}
		hi = maxEnd(hi, spanEnd(s))
	}
	descs := c.cache.Overlapping(lo, hi)
	if len(descs) == 0 {
		return nil, errors.New("txncoord: no shard descriptors")
	}
	reps := make([]*shard.Replica, len(descs))
	for i, d := range descs {
		rep, err := c.shards.Replica(d.ShardId)
		if err != nil {
			return nil, err
		}
		reps[i] = rep
	}
	return reps, nil
}

// spanEnd is the etcd range end that covers s: its own end, or for a single
// key (or a range that holds no key) the key's successor.
func spanEnd(s keySpan) []byte {
	toEnd := len(s.end) == 1 && s.end[0] == 0
	if toEnd || (len(s.end) > 0 && bytes.Compare(s.end, s.key) > 0) {
		return s.end
	}
	return append(slices.Clip(s.key), 0)
}

// maxEnd returns the larger of two etcd range ends ("\x00" is infinite;
// nil is none).
func maxEnd(a, b []byte) []byte {
	switch {
	case len(a) == 0:
		return b
	case len(a) == 1 && a[0] == 0, len(b) == 1 && b[0] == 0:
		return []byte{0}
	case bytes.Compare(a, b) >= 0:
		return a
	}
	return b
}

func shardsOf(reps []*shard.Replica) []*mvcc.Shard {
	out := make([]*mvcc.Shard, len(reps))
	for i, r := range reps {
		out[i] = r.Shard()
	}
	return out
}

// Txn runs a transaction on the shard that owns its keys, or, when they
// fall in several shards, as a transaction across shards (txnAcross). A
// transaction that only reads is a read of the shards at one revision.
//
// A transaction across shards whose primary another member leads fails
// with a NotLeaderError naming it, so that the router forwards it there.
func (c *Coordinator) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	return c.txn(ctx, r, true)
}

// txn is Txn; without forward, a transaction across shards runs on this
// node wherever its primary is led.
func (c *Coordinator) txn(ctx context.Context, r *pb.TxnRequest, forward bool) (*pb.TxnResponse, error) {
	spans := txnSpans(r, nil)
	if IsTxnReadonly(r) {
		return c.readTxn(ctx, spans, r, isTxnSerializable(r))
	}
	if err := c.syncLeases(ctx, r); err != nil {
		return nil, err
	}
	var resp *pb.TxnResponse
	err := c.retry(ctx, func() error {
		rep, err := c.replicaFor(spans)
		if errors.Is(err, errAcrossShards) {
			if forward {
				if err := c.primaryElsewhere(spans); err != nil {
					return err // the router forwards the transaction there
				}
			}
			resp, err = c.txnAcross(ctx, r, spans)
			return err
		}
		if err != nil {
			return err
		}
		resp, err = rep.Write(ctx, r)
		if errors.Is(err, shard.ErrNoWrite) {
			// The chosen branch changes nothing: answer it as a read at the
			// current revision. If meanwhile it would write, sequence it
			// again.
			resp, err = c.readTxnOnce(ctx, spans, r, false)
			if errors.Is(err, mvcc.ErrTxnWrites) {
				return errRetryNow
			}
		}
		return err
	})
	return resp, err
}

// retry is Retry for requests routed by the range cache: after a shard
// answered that keys are not in its span, this node's meta replica catches
// up (the split may be recorded by now) before the next attempt.
func (c *Coordinator) retry(ctx context.Context, f func() error) error {
	return Retry(ctx, func() error {
		err := f()
		if errors.Is(err, shard.ErrWrongShard) {
			_ = c.meta.Sync(ctx)
		}
		return err
	})
}

// syncLeases makes sure this node's meta replica knows of every lease r's
// puts attach keys to, when it does not yet: the grant may have been
// acknowledged by the meta leader before this replica applied it.
func (c *Coordinator) syncLeases(ctx context.Context, r *pb.TxnRequest) error {
	for _, id := range txnLeases(r, nil) {
		if !c.leases.LeaseExists(id) {
			return c.meta.Sync(ctx)
		}
	}
	return nil
}

// txnLeases collects the leases that r's puts attach keys to.
func txnLeases(r *pb.TxnRequest, ids []int64) []int64 {
	for _, branch := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range branch {
			if p := op.GetRequestPut(); p != nil && p.Lease != 0 {
				ids = append(ids, p.Lease)
			}
			if t := op.GetRequestTxn(); t != nil {
				ids = txnLeases(t, ids)
			}
		}
	}
	return ids
}

func (c *Coordinator) readTxn(ctx context.Context, spans []keySpan, r *pb.TxnRequest, serializable bool) (*pb.TxnResponse, error) {
	var resp *pb.TxnResponse
	err := c.retry(ctx, func() (err error) {
		resp, err = c.readTxnOnce(ctx, spans, r, serializable)
		return err
	})
	return resp, err
}

func (c *Coordinator) readTxnOnce(ctx context.Context, spans []keySpan, r *pb.TxnRequest, serializable bool) (*pb.TxnResponse, error) {
	if len(spans) == 0 {
		spans = []keySpan{{key: []byte{}}} // no keys: any shard answers
	}
	view, err := c.readView(ctx, spans, serializable)
	if err != nil {
		return nil, err
	}
	return mvcc.ReadTxn(ctx, view, r, c.leases)
}

// Put is a transaction of one put.
func (c *Coordinator) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	resp, err := c.Txn(ctx, PutTxn(r))
	if err != nil {
		return nil, err
	}
	return PutResponse(resp), nil
}

// DeleteRange is a transaction of one delete.
func (c *Coordinator) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	resp, err := c.Txn(ctx, DeleteRangeTxn(r))
	if err != nil {
		return nil, err
	}
	return DeleteRangeResponse(resp), nil
}

// PutTxn is the transaction of one put.
func PutTxn(r *pb.PutRequest) *pb.TxnRequest {
	// One allocation for the four parts: a put is the commonest request.
	t := &struct {
		txn pb.TxnRequest
		ops [1]*pb.RequestOp
		op  pb.RequestOp
		put pb.RequestOp_RequestPut
	}{}
	t.put.RequestPut = r
	t.op.Request = &t.put
	t.ops[0] = &t.op
	t.txn.Success = t.ops[:]
	return &t.txn
}

// PutResponse is a put's response, from its transaction's.
func PutResponse(resp *pb.TxnResponse) *pb.PutResponse {
	out := resp.Responses[0].GetResponsePut()
	out.Header = resp.Header
	return out
}

// DeleteRangeTxn is the transaction of one delete.
func DeleteRangeTxn(r *pb.DeleteRangeRequest) *pb.TxnRequest {
	return &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: r}}}}
}

// DeleteRangeResponse is a delete's response, from its transaction's.
func DeleteRangeResponse(resp *pb.TxnResponse) *pb.DeleteRangeResponse {
	out := resp.Responses[0].GetResponseDeleteRange()
	out.Header = resp.Header
	return out
}

// Compact compacts every shard at r.Revision and records the compaction in
// the meta group. Each shard compacts inside its apply, so when Compact
// returns the history is physically gone (physical or not).
func (c *Coordinator) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	cur, err := c.CurrentRevision(ctx)
	if err != nil {
		return nil, err
	}
	reps, err := c.allReplicasWait(ctx)
	if err != nil {
		return nil, err
	}
	for _, rep := range reps {
		if r.Revision <= rep.Shard().CompactRev() {
			return nil, mvcc.ErrCompacted
		}
	}
	if r.Revision > cur {
		return nil, mvcc.ErrFutureRev
	}
	for _, rep := range reps {
		if err := Retry(ctx, func() error { return rep.Compact(ctx, r.Revision) }); err != nil {
			return nil, err
		}
	}
	rec := &basaltpb.MetaCommand{Command: &basaltpb.MetaCommand_RecordCompaction{RecordCompaction: &basaltpb.RecordCompaction{Revision: r.Revision}}}
	if err := Retry(ctx, func() error { return c.meta.Propose(ctx, rec) }); err != nil {
		return nil, err
	}
	if cur, err = c.CurrentRevision(ctx); err != nil {
		return nil, err
	}
	return &pb.CompactionResponse{Header: &pb.ResponseHeader{Revision: cur}}, nil
}

// HashKV returns etcd's hash of the key-value history at rev (0: current).
// With one shard it is that shard's, at its applied revision; across
// shards, the hash of all of them at the cluster's current revision.
func (c *Coordinator) HashKV(ctx context.Context, rev int64) (mvcc.KeyValueHash, int64, error) {
	var (
		h   mvcc.KeyValueHash
		cur int64
	)
	err := c.retry(ctx, func() error {
		view, err := c.readView(ctx, []keySpan{{key: []byte{}, end: []byte{0}}}, false)
		if err != nil {
			return err
		}
		h, cur, err = view.HashKV(ctx, rev)
		return err
	})
	return h, cur, err
}

// Backup writes a backup of the whole key space (mvcc.WriteBackup) at the
// current revision. This node's meta replica catches up before leases is
// called, so that every lease granted by then is in it. It stops at the
// first write after ctx ends.
func (c *Coordinator) Backup(ctx context.Context, w io.Writer, leases func() []mvcc.BackupLease) error {
	w = ctxWriter{ctx: ctx, w: w}
	for {
		var view *mvcc.ReadView
		err := c.retry(ctx, func() (err error) {
			view, err = c.readView(ctx, []keySpan{{key: []byte{}, end: []byte{0}}}, false)
			return err
		})
		if err != nil {
			return err
		}
		if err := c.meta.Sync(ctx); err != nil {
			return err
		}
		// A compaction past the view's revision: take a newer view.
		if err := view.WriteBackup(w, leases()); !errors.Is(err, mvcc.ErrCompacted) {
			return err
		}
	}
}

// ctxWriter fails its writes once ctx ends, so that a long write to it
// stops when its caller goes away.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (cw ctxWriter) Write(p []byte) (int, error) {
	if err := cw.ctx.Err(); err != nil {
		return 0, err
	}
	return cw.w.Write(p)
}

// RevokeLeaseKeys deletes every key attached to a lease, with DELETE
// events, at one revision. Keys in one shard are deleted at its leader
// (through the Internal service when that is another member); keys in
// several shards by a transaction across them that deletes each key still
// attached to the lease. The lease must already be gone from the meta
// group.
func (c *Coordinator) RevokeLeaseKeys(ctx context.Context, lease int64) error {
	reps, err := c.allReplicasWait(ctx)
	if err != nil {
		return err
	}
	var (
		holding []*shard.Replica
		keys    [][]byte
	)
	for _, rep := range reps {
		if err := rep.Sync(ctx); err != nil {
			return err
		}
		k, err := rep.Shard().LeaseKeys(lease)
		if err != nil {
			return err
		}
		if len(k) > 0 {
			holding = append(holding, rep)
			keys = append(keys, k...)
		}
	}
	switch len(holding) {
	case 0:
		return nil
	case 1:
		return c.revokeLeaseKeysAt(ctx, lease, holding[0].ShardID())
	}
	// Each key in key order (etcd's order of the DELETE events), deleted
	// if it still has the lease.
	txn := &pb.TxnRequest{Success: make([]*pb.RequestOp, len(keys))}
	for i, k := range keys {
		txn.Success[i] = &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: k, Target: pb.Compare_LEASE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Lease{Lease: lease}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: k}}}},
		}}}
	}
	_, err = c.txn(ctx, txn, false)
	return err
}

// revokeLeaseKeysAt deletes the keys of one shard attached to a lease at
// the shard's leader.
func (c *Coordinator) revokeLeaseKeysAt(ctx context.Context, lease int64, shardID uint64) error {
	return c.atShardLeader(ctx, func() error { return c.RevokeLeaseKeysHere(ctx, lease, shardID) },
		func(peer basaltpb.InternalClient) error {
			_, err := peer.RevokeLeaseKeys(ctx, &basaltpb.RevokeLeaseKeysRequest{Lease: lease, ShardId: shardID})
			return err
		})
}

// atShardLeader runs here, on this node's replica of a shard, or, when it
// names a leader on another member, there through that member's Internal
// service; it retries while the leader is unknown or moving (Retry).
func (c *Coordinator) atShardLeader(ctx context.Context, here func() error, there func(basaltpb.InternalClient) error) error {
	return Retry(ctx, func() error {
		err := here()
		leader := shard.LeaderElsewhere(err)
		if leader == 0 || c.peers == nil {
			return err
		}
		peer, err := c.peers.Internal(leader)
		if err != nil {
			return err
		}
		return FromRemote(there(peer))
	})
}

// RevokeLeaseKeysHere deletes the keys of one shard attached to a lease, at
// one revision, on this node's replica, which must lead the shard. It first
// waits until this node's meta replica has applied the revocation, so that
// no write sequenced after it attaches a key to the lease.
func (c *Coordinator) RevokeLeaseKeysHere(ctx context.Context, lease int64, shardID uint64) error {
	if c.leases.LeaseExists(lease) {
		if err := c.meta.Sync(ctx); err != nil {
			return err
		}
	}
	rep, err := c.shards.Replica(shardID)
	if err != nil {
		return err
	}
	return c.retry(ctx, func() error {
		_, err := rep.RevokeLease(ctx, lease)
		if errors.Is(err, shard.ErrNoWrite) {
			return nil // no keys
		}
		return err
	})
}

// ResolveHere returns once this node's replica of a shard, its leader, has
// applied every write of the shard at or below rev (a follower elsewhere
// then reads at rev).
func (c *Coordinator) ResolveHere(ctx context.Context, shardID uint64, rev int64) error {
	rep, err := c.shards.Replica(shardID)
	if err != nil {
		return err
	}
	return rep.ResolveAsLeader(ctx, rev)
}

// ResolveRemote asks the shard's leader, another member, to resolve rev
// (shard.RemoteResolver).
func (c *Coordinator) ResolveRemote(ctx context.Context, leader, shardID uint64, rev int64) error {
	if c.peers == nil {
		return shard.ErrNotLeader
	}
	peer, err := c.peers.Internal(leader)
	if err != nil {
		return err
	}
	_, err = peer.Resolve(ctx, &basaltpb.ResolveRequest{ShardId: shardID, Revision: rev})
	return FromRemote(err)
}

// LeaseKeys returns the keys attached to a lease, from every shard, after
// each local replica caught up with its shard (a replica that does not lead
// may not have applied a write acknowledged before the call).
func (c *Coordinator) LeaseKeys(ctx context.Context, lease int64) ([][]byte, error) {
	reps, err := c.allReplicasWait(ctx)
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	for _, rep := range reps {
		if err := rep.Sync(ctx); err != nil {
			return nil, err
		}
		k, err := rep.Shard().LeaseKeys(lease)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k...)
	}
	return keys, nil
}

// LeaseIDs returns the leases that have keys in some shard.
func (c *Coordinator) LeaseIDs() ([]int64, error) {
	reps, err := c.allReplicas()
	if err != nil {
		return nil, err
	}
	var ids []int64
	for _, rep := range reps {
		s, err := rep.Shard().LeaseIDs()
		if err != nil {
			return nil, err
		}
		ids = append(ids, s...)
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// allReplicasWait is allReplicas, retried while a shard's replica is
// still starting (a shard a split just created).
func (c *Coordinator) allReplicasWait(ctx context.Context) ([]*shard.Replica, error) {
	var reps []*shard.Replica
	err := c.retry(ctx, func() (err error) {
		reps, err = c.allReplicas()
		return err
	})
	return reps, err
}

// allReplicas returns this node's replicas of every shard.
func (c *Coordinator) allReplicas() ([]*shard.Replica, error) {
	descs := c.cache.All()
	reps := make([]*shard.Replica, 0, len(descs))
	for _, d := range descs {
		rep, err := c.shards.Replica(d.ShardId)
		if err != nil {
			return nil, err
		}
		reps = append(reps, rep)
	}
	return reps, nil
}

// keySpan is a key and an etcd range end.
type keySpan struct{ key, end []byte }

// txnSpans collects the spans of every compare and operation of rt, nested
// transactions and both branches included.
func txnSpans(rt *pb.TxnRequest, spans []keySpan) []keySpan {
	for _, cmp := range rt.Compare {
		spans = append(spans, keySpan{cmp.Key, cmp.RangeEnd})
	}
	for _, branch := range [][]*pb.RequestOp{rt.Success, rt.Failure} {
		for _, op := range branch {
			switch tv := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				spans = append(spans, keySpan{tv.RequestRange.Key, tv.RequestRange.RangeEnd})
			case *pb.RequestOp_RequestPut:
				spans = append(spans, keySpan{tv.RequestPut.Key, nil})
			case *pb.RequestOp_RequestDeleteRange:
				spans = append(spans, keySpan{tv.RequestDeleteRange.Key, tv.RequestDeleteRange.RangeEnd})
			case *pb.RequestOp_RequestTxn:
				spans = txnSpans(tv.RequestTxn, spans)
			}
		}
	}
	return spans
}

// replicaFor returns the replica of the one shard that owns every span.
func (c *Coordinator) replicaFor(spans []keySpan) (*shard.Replica, error) {
	var ids []uint64
	for _, s := range spans {
		for _, d := range c.cache.Overlapping(s.key, s.end) {
			if !slices.Contains(ids, d.ShardId) {
				ids = append(ids, d.ShardId)
			}
		}
	}
	switch len(ids) {
	case 0:
		// A transaction with no keys at all: any shard answers it.
		descs := c.cache.Overlapping([]byte{0}, nil)
		if len(descs) == 0 {
			return nil, errors.New("txncoord: no shard descriptors")
		}
		return c.shards.Replica(descs[0].ShardId)
	case 1:
		return c.shards.Replica(ids[0])
	}
	return nil, errAcrossShards
}

// errAcrossShards tells that a request's keys fall in several shards.
var errAcrossShards = errors.New("txncoord: keys in several shards")

// IsTxnReadonly reports whether every operation of r's branches is a range:
// such a transaction is a read and never needs a revision.
func IsTxnReadonly(r *pb.TxnRequest) bool {
	for _, branch := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range branch {
			if op.GetRequestRange() == nil {
				return false
			}
		}
	}
	return true
}

func isTxnSerializable(r *pb.TxnRequest) bool {
	for _, branch := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range branch {
			if rr := op.GetRequestRange(); rr == nil || !rr.Serializable {
				return false
			}
		}
	}
	return true
}

// errRetryNow asks retry to run the function again without waiting.
var errRetryNow = errors.New("txncoord: retry")

// RetryTimeout bounds how long a request is retried after retryable
// failures (a leader being elected, a full queue), as etcd's request
// timeout does.
const RetryTimeout = 7 * time.Second

// Retry runs f until it succeeds, fails with an error that is not
// retryable (IsRetryable) or names a leader elsewhere, ctx ends, or RetryTimeout passes since the first
// failure; it backs off between retryable failures. A request that succeeds
// at once pays for no timer.
func Retry(ctx context.Context, f func() error) error {
	backoff := time.Millisecond
	var deadline time.Time
	for {
		err := f()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errRetryNow):
			continue
		case shard.LeaderElsewhere(err) != 0:
			return err // the caller sends the request to the leader
		case !IsRetryable(err):
			return err
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(RetryTimeout)
		} else if time.Now().After(deadline) {
			return err
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return err
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// IsRetryable reports whether a request failed before it could take effect
// and may be sent again: shard errors the sequencer marks so, and a TSO or
// lessor that is not serving yet.
func IsRetryable(err error) bool {
	return shard.IsRetryable(err) || errors.Is(err, ErrTSONotReady) || errors.Is(err, ErrLessorNotReady)
}
