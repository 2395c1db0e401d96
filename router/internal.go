package router

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	if err := i.s.coord.RevokeLeaseKeysHere(ctx, r.Lease); err != nil {
		return nil, txncoord.ToRemote(err)
	}
	return &basaltpb.RevokeLeaseKeysResponse{}, nil
}
