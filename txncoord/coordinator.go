package txncoord

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"

	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/proto/basaltpb"
	"github.com/basaltdb/basalt/shard"
)

// Shards finds the replica that serves a shard's requests.
type Shards interface {
	Replica(shardID uint64) (*shard.Replica, error)
}

// Revisions is the TSO as the coordinator uses it.
type Revisions interface {
	Current(ctx context.Context) (int64, error)
}

// CrossShardError is returned for a request whose keys fall in more than one
// shard, which needs a cross-shard transaction.
type CrossShardError struct {
	Shards []uint64
}

func (e *CrossShardError) Error() string {
	ids := make([]string, len(e.Shards))
	for i, id := range e.Shards {
		ids[i] = fmt.Sprint(id)
	}
	return "basalt: transactions across shards are not supported yet (shards " + strings.Join(ids, ", ") + ")"
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
}

// NewCoordinator returns a coordinator.
func NewCoordinator(tso Revisions, cache *RangeCache, shards Shards, meta MetaGroup, leases mvcc.LeaseChecker, lg *zap.Logger) *Coordinator {
	return &Coordinator{tso: tso, cache: cache, shards: shards, meta: meta, leases: leases, lg: lg}
}

// SetPeers lets the coordinator reach other members (to revoke a lease's
// keys at their shard's leader). Call it before serving.
func (c *Coordinator) SetPeers(p Peers) { c.peers = p }

// LocalRevision returns the newest revision applied by this node's
// replicas: cheap, not linearizable, for headers that carry no promise
// (lease keep-alives).
func (c *Coordinator) LocalRevision() int64 {
	reps, err := c.allReplicas()
	if err != nil {
		return 0
	}
	var rev int64
	for _, r := range reps {
		rev = max(rev, r.Shard().Rev())
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

// Range answers a RangeRequest: linearizable at the TSO's current revision,
// or serializable from the local replica's applied state.
func (c *Coordinator) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	rep, err := c.replicaFor([]keySpan{{r.Key, r.RangeEnd}})
	if err != nil {
		return nil, err
	}
	var resp *pb.RangeResponse
	err = Retry(ctx, func() error {
		view, err := c.view(ctx, rep, r.Serializable)
		if err != nil {
			return err
		}
		resp, err = mvcc.ExecuteRange(ctx, view, r)
		return err
	})
	return resp, err
}

// view returns the view a read runs on: the replica's applied state, for
// a linearizable read once the replica has applied everything its shard
// committed before the read (ReadLatest, on any replica, so followers
// answer linearizable reads themselves).
func (c *Coordinator) view(ctx context.Context, rep *shard.Replica, serializable bool) (*mvcc.ReadView, error) {
	if serializable {
		return rep.View(), nil
	}
	return rep.ReadLatest(ctx)
}

// Txn runs a transaction on the shard that owns its keys.
func (c *Coordinator) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	rep, err := c.replicaFor(txnSpans(r, nil))
	if err != nil {
		return nil, err
	}
	if IsTxnReadonly(r) {
		return c.readTxn(ctx, rep, r, isTxnSerializable(r))
	}
	if err := c.syncLeases(ctx, r); err != nil {
		return nil, err
	}
	var resp *pb.TxnResponse
	err = Retry(ctx, func() error {
		resp, err = rep.Write(ctx, r)
		if errors.Is(err, shard.ErrNoWrite) {
			// The chosen branch changes nothing: answer it as a read at the
			// current revision. If meanwhile it would write, sequence it
			// again.
			resp, err = c.readTxn(ctx, rep, r, false)
			if errors.Is(err, mvcc.ErrTxnWrites) {
				return errRetryNow
			}
		}
		return err
	})
	return resp, err
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

func (c *Coordinator) readTxn(ctx context.Context, rep *shard.Replica, r *pb.TxnRequest, serializable bool) (*pb.TxnResponse, error) {
	var resp *pb.TxnResponse
	err := Retry(ctx, func() error {
		view, err := c.view(ctx, rep, serializable)
		if err != nil {
			return err
		}
		resp, err = mvcc.ReadTxn(ctx, view, r, c.leases)
		return err
	})
	return resp, err
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
	return &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: r}}}}
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
	reps, err := c.allReplicas()
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
func (c *Coordinator) HashKV(ctx context.Context, rev int64) (mvcc.KeyValueHash, int64, error) {
	reps, err := c.allReplicas()
	if err != nil {
		return mvcc.KeyValueHash{}, 0, err
	}
	if len(reps) != 1 {
		return mvcc.KeyValueHash{}, 0, &CrossShardError{Shards: shardIDs(reps)}
	}
	return reps[0].Shard().HashKV(ctx, rev)
}

// RevokeLeaseKeys deletes every key attached to a lease, at one revision,
// with DELETE events, at the leader of the shard that holds them (through
// the Internal service when that is another member). The lease must already
// be gone from the meta group.
func (c *Coordinator) RevokeLeaseKeys(ctx context.Context, lease int64) error {
	return Retry(ctx, func() error {
		err := c.RevokeLeaseKeysHere(ctx, lease)
		leader := shard.LeaderElsewhere(err)
		if leader == 0 || c.peers == nil {
			return err
		}
		peer, err := c.peers.Internal(leader)
		if err != nil {
			return err
		}
		_, err = peer.RevokeLeaseKeys(ctx, &basaltpb.RevokeLeaseKeysRequest{Lease: lease})
		return FromRemote(err)
	})
}

// RevokeLeaseKeysHere is RevokeLeaseKeys on this node's replica, which must
// lead its shard. It first waits until this node's meta replica has applied
// the revocation, so that no write sequenced after it attaches a key to the
// lease.
func (c *Coordinator) RevokeLeaseKeysHere(ctx context.Context, lease int64) error {
	reps, err := c.allReplicas()
	if err != nil {
		return err
	}
	if len(reps) != 1 {
		// One revision across shards needs a cross-shard transaction.
		return &CrossShardError{Shards: shardIDs(reps)}
	}
	if c.leases.LeaseExists(lease) {
		if err := c.meta.Sync(ctx); err != nil {
			return err
		}
	}
	return Retry(ctx, func() error {
		_, err := reps[0].RevokeLease(ctx, lease)
		if errors.Is(err, shard.ErrNoWrite) {
			return nil // no keys
		}
		return err
	})
}

// LeaseKeys returns the keys attached to a lease, from every shard, after
// each local replica caught up with its shard (a replica that does not lead
// may not have applied a write acknowledged before the call).
func (c *Coordinator) LeaseKeys(ctx context.Context, lease int64) ([][]byte, error) {
	reps, err := c.allReplicas()
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

func (c *Coordinator) allReplicas() ([]*shard.Replica, error) {
	descs := c.cache.Overlapping([]byte{0}, []byte{0})
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

func shardIDs(reps []*shard.Replica) []uint64 {
	ids := make([]uint64, len(reps))
	for i, r := range reps {
		ids[i] = r.ShardID()
	}
	return ids
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
	slices.Sort(ids)
	return nil, &CrossShardError{Shards: ids}
}

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
