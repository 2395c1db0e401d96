package router

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/basaltpb"
	"github.com/basaltdb/basalt/txncoord"
)

// internalServer is the node-to-node service (basalt.proto): the TSO for
// members that do not lead the meta group, and lease revocation at the
// data shard's leader.
type internalServer struct {
	basaltpb.UnimplementedInternalServer
	s *Server
}

func (i *internalServer) Allocate(ctx context.Context, r *basaltpb.AllocateRequest) (*basaltpb.AllocateResponse, error) {
	if r.Count <= 0 {
		return nil, status.Errorf(codes.InvalidArgument, "basalt: allocate %d revisions", r.Count)
	}
	first, err := i.s.cfg.TSO.Allocate(ctx, int(r.Count))
	if err != nil {
		return nil, txncoord.ToRemote(err)
	}
	return &basaltpb.AllocateResponse{First: first}, nil
}

func (i *internalServer) Current(ctx context.Context, _ *basaltpb.CurrentRequest) (*basaltpb.CurrentResponse, error) {
	rev, err := i.s.cfg.TSO.Current(ctx)
	if err != nil {
		return nil, txncoord.ToRemote(err)
	}
	return &basaltpb.CurrentResponse{Revision: rev}, nil
}

func (i *internalServer) RevokeLeaseKeys(ctx context.Context, r *basaltpb.RevokeLeaseKeysRequest) (*basaltpb.RevokeLeaseKeysResponse, error) {
	if err := i.s.coord.RevokeLeaseKeysHere(ctx, r.Lease, r.ShardId); err != nil {
		return nil, txncoord.ToRemote(err)
	}
	return &basaltpb.RevokeLeaseKeysResponse{}, nil
}

// Split splits the shard that owns r.Key at r.Key, at that shard's leader
// (forwarded there when it is another member).
func (i *internalServer) Split(ctx context.Context, r *basaltpb.SplitRequest) (*basaltpb.SplitResponse, error) {
	if len(r.Key) == 0 {
		return nil, status.Error(codes.InvalidArgument, "basalt: split key is empty")
	}
	resp, err := routed(i.s, ctx, true, func() (*basaltpb.SplitResponse, error) {
		left, right, err := i.s.coord.SplitHere(ctx, r.Key)
		if err != nil {
			return nil, err
		}
		return &basaltpb.SplitResponse{Left: left, Right: right}, nil
	}, func(ctx context.Context, _ uint64, conn *grpc.ClientConn) (*basaltpb.SplitResponse, error) {
		return basaltpb.NewInternalClient(conn).Split(forwarded(ctx), r)
	})
	if errors.Is(err, txncoord.ErrSplitAtBoundary) {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return resp, toGRPCError(ctx, err)
}

// Shards lists the shards, with what this node's replicas tell of them.
func (i *internalServer) Shards(ctx context.Context, _ *basaltpb.ShardsRequest) (*basaltpb.ShardsResponse, error) {
	infos, err := i.s.coord.Shards(ctx)
	if err != nil {
		return nil, toGRPCError(ctx, err)
	}
	resp := &basaltpb.ShardsResponse{}
	for _, in := range infos {
		resp.Shards = append(resp.Shards, &basaltpb.ShardInfo{
			Descriptor_: in.Descriptor, Leader: in.Leader, Size: in.Size, Keys: in.Keys, Revision: in.Revision,
		})
	}
	return resp, nil
}

// Resolve answers a follower's read at a revision: this node's replica,
// the shard's leader, has applied every write of the shard at or below it.
func (i *internalServer) Resolve(ctx context.Context, r *basaltpb.ResolveRequest) (*basaltpb.ResolveResponse, error) {
	if err := i.s.coord.ResolveHere(ctx, r.ShardId, r.Revision); err != nil {
		return nil, txncoord.ToRemote(err)
	}
	return &basaltpb.ResolveResponse{}, nil
}

// TxnStep runs a step of a transaction across shards at this node's
// replica of the shard, its leader.
func (i *internalServer) TxnStep(ctx context.Context, r *basaltpb.TxnStepRequest) (*basaltpb.TxnStepResponse, error) {
	cmd := &basaltpb.DataCommand{}
	if err := proto.Unmarshal(r.Command, cmd); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "basalt: undecodable transaction step: %v", err)
	}
	switch cmd.Command.(type) {
	case *basaltpb.DataCommand_Lock, *basaltpb.DataCommand_Commit, *basaltpb.DataCommand_Abort, *basaltpb.DataCommand_Forget:
	default:
		return nil, status.Errorf(codes.InvalidArgument, "basalt: %T is not a transaction step", cmd.Command)
	}
	res, err := i.s.coord.TxnStepHere(ctx, r.ShardId, cmd)
	if err != nil {
		return nil, txncoord.ToRemote(err)
	}
	return &basaltpb.TxnStepResponse{Result: res}, nil
}
