package router

import (
	"context"
	"errors"

	"github.com/lni/dragonboat/v4"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/shard"
	"github.com/basaltdb/basalt/txncoord"
)

// errRequestTooLarge is a write whose Raft entry would exceed
// --max-request-bytes.
var errRequestTooLarge = errors.New("router: request is too large")

// errorTable is the one place internal errors become etcd's gRPC errors.
// clientv3 turns gRPC errors back into typed errors by their message, so
// each must be byte for byte etcd's (rpctypes).
var errorTable = []struct {
	err  error
	grpc error
}{
	{mvcc.ErrCompacted, rpctypes.ErrGRPCCompacted},
	{mvcc.ErrFutureRev, rpctypes.ErrGRPCFutureRev},
	{mvcc.ErrKeyNotFound, rpctypes.ErrGRPCKeyNotFound},
	{mvcc.ErrLeaseNotFound, rpctypes.ErrGRPCLeaseNotFound},
	{shard.ErrLeaseExists, rpctypes.ErrGRPCLeaseExist},
	{shard.ErrMemberNotFound, rpctypes.ErrGRPCMemberNotFound},
	{shard.ErrPeerURLExist, rpctypes.ErrGRPCPeerURLExist},
	{shard.ErrMemberExist, rpctypes.ErrGRPCMemberExist},
	{shard.ErrMemberNotLearner, rpctypes.ErrGRPCMemberNotLearner},
	{shard.ErrMemberBadURLs, rpctypes.ErrGRPCMemberBadURLs},
	{shard.ErrRaftAddressChange, status.Error(codes.FailedPrecondition, shard.ErrRaftAddressChange.Error())},
	{txncoord.ErrLeaseTTLTooLarge, rpctypes.ErrGRPCLeaseTTLTooLarge},
	{txncoord.ErrLessorNotReady, rpctypes.ErrGRPCNoLeader},
	{errRequestTooLarge, rpctypes.ErrGRPCRequestTooLarge},
	{shard.ErrBusy, rpctypes.ErrGRPCRequestTooManyRequests},
	{shard.ErrNotLeader, rpctypes.ErrGRPCNoLeader},
	{shard.ErrStopped, rpctypes.ErrGRPCStopped},
	{shard.ErrLeaderChanged, rpctypes.ErrGRPCLeaderChanged},
	{shard.ErrStaleRevision, rpctypes.ErrGRPCLeaderChanged},
	{shard.ErrWrongShard, rpctypes.ErrGRPCTimeout},
	{txncoord.ErrTSONotReady, rpctypes.ErrGRPCNoLeader},
	{dragonboat.ErrShardNotReady, rpctypes.ErrGRPCNoLeader},
	{dragonboat.ErrShardNotFound, rpctypes.ErrGRPCNoLeader},
	{dragonboat.ErrSystemBusy, rpctypes.ErrGRPCRequestTooManyRequests},
	{dragonboat.ErrTimeout, rpctypes.ErrGRPCTimeout},
	{dragonboat.ErrClosed, rpctypes.ErrGRPCStopped},
	{dragonboat.ErrShardClosed, rpctypes.ErrGRPCStopped},
	{context.DeadlineExceeded, rpctypes.ErrGRPCTimeout},
}

// toGRPCError turns an error of a request into the gRPC error etcd returns.
// clientCtx is the client's context: when it ended, the client's own
// cancellation or deadline is reported as such.
func toGRPCError(clientCtx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if cerr := clientCtx.Err(); cerr != nil {
		return status.FromContextError(cerr).Err()
	}
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			return e.grpc
		}
	}
	return status.Error(codes.Unknown, err.Error())
}
