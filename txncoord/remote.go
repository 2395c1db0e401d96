package txncoord

import (
	"context"
	"errors"

	"github.com/lni/dragonboat/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/proto/basaltpb"
	"github.com/basaltdb/basalt/shard"
)

// Peers reaches the Internal service of other members of the cluster.
type Peers interface {
	Internal(memberID uint64) (basaltpb.InternalClient, error)
}

// RoutedTSO is a node's TSOServer in a cluster: the local TSO while this
// node leads the meta group, the leader's through the Internal service
// otherwise.
type RoutedTSO struct {
	local *TSO
	self  uint64
	// leader returns the meta group's leader (0 when unknown).
	leader func() uint64
	peers  Peers
}

// NewRoutedTSO returns the TSOServer of member self.
func NewRoutedTSO(local *TSO, self uint64, leader func() uint64, peers Peers) *RoutedTSO {
	return &RoutedTSO{local: local, self: self, leader: leader, peers: peers}
}

// remote returns the meta leader's Internal client, or nil when this node
// leads (or no leader is known: the local TSO then answers not ready).
func (r *RoutedTSO) remote() (basaltpb.InternalClient, error) {
	leader := r.leader()
	if leader == 0 || leader == r.self {
		return nil, nil
	}
	return r.peers.Internal(leader)
}

// Allocate hands out n consecutive revisions.
func (r *RoutedTSO) Allocate(ctx context.Context, n int) (int64, error) {
	c, err := r.remote()
	switch {
	case err != nil:
		return 0, err
	case c == nil:
		first, err := r.local.Allocate(ctx, n)
		return first, fromLocal(err)
	}
	resp, err := c.Allocate(ctx, &basaltpb.AllocateRequest{Count: int64(n)})
	if err != nil {
		return 0, FromRemote(err)
	}
	return resp.First, nil
}

// Current returns the TSO's current revision.
func (r *RoutedTSO) Current(ctx context.Context) (int64, error) {
	c, err := r.remote()
	switch {
	case err != nil:
		return 0, err
	case c == nil:
		rev, err := r.local.Current(ctx)
		return rev, fromLocal(err)
	}
	resp, err := c.Current(ctx, &basaltpb.CurrentRequest{})
	if err != nil {
		return 0, FromRemote(err)
	}
	return resp.Revision, nil
}

// ErrRemoteNotReady is the error a node answers through the Internal
// service when what it was asked to lead it does not (or not yet): the
// caller finds the leader again and retries.
var ErrRemoteNotReady = status.Error(codes.Unavailable, "basalt: not the leader")

// FromRemote turns an Internal call's error into a local one: a node that
// was unreachable or did not lead becomes a retryable not-leader error with
// no leader known, so that the caller looks for the leader again.
func FromRemote(err error) error {
	if status.Code(err) == codes.Unavailable {
		return &shard.NotLeaderError{}
	}
	return err
}

// fromLocal turns the local TSO's "not the leader" into one that names no
// leader, as FromRemote does. The error names the meta group's leader, and
// a caller must not take it for the leader of what it asked for: a write
// whose batch could not get its revisions would be sent to the meta leader
// as if it led the data shard, and Retry would end a watch's creation at
// once ("etcdserver: no leader") instead of asking the new meta leader.
func fromLocal(err error) error {
	if shard.LeaderElsewhere(err) != 0 {
		return &shard.NotLeaderError{ShardID: shard.MetaShardID}
	}
	return err
}

// ToRemote turns a local error into the Internal service's answer. A
// replica that does not lead, or cannot serve yet (restarting, electing, or
// dropping the request), answers ErrRemoteNotReady: the caller retries, as
// it would with the same error from a local replica.
func ToRemote(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, shard.ErrNotLeader) || errors.Is(err, ErrTSONotReady) || errors.Is(err, ErrLessorNotReady) ||
		errors.Is(err, dragonboat.ErrShardNotReady) || errors.Is(err, dragonboat.ErrShardNotFound) {
		return ErrRemoteNotReady
	}
	return status.Error(codes.Unknown, err.Error())
}
