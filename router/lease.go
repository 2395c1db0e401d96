package router

import (
	"context"
	"errors"
	"io"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/shard"
	"github.com/basaltdb/basalt/txncoord"
)

// leaseServer is etcd's Lease service over the lessor, which runs where the
// meta group's leader is: other members forward lease requests there.
type leaseServer struct {
	pb.UnimplementedLeaseServer
	s *Server
}

// atMetaLeader runs a request here when this member leads the meta group
// (or no leader is known yet), and at the leader otherwise (routed).
func atMetaLeader[Resp any](s *Server, ctx context.Context, write bool, here func() (Resp, error), there func(context.Context, *grpc.ClientConn) (Resp, error)) (Resp, error) {
	resp, err := routed(s, ctx, write, func() (Resp, error) {
		if err := s.metaLeaderElsewhere(); err != nil {
			var none Resp
			return none, err
		}
		return here()
	}, func(ctx context.Context, _ uint64, conn *grpc.ClientConn) (Resp, error) {
		return there(forwarded(ctx), conn)
	})
	return resp, toGRPCError(ctx, err)
}

// metaLeaderElsewhere returns a NotLeaderError naming the meta group's
// leader when that is another member.
func (s *Server) metaLeaderElsewhere() error {
	if leader := s.cfg.MetaLeader(); leader != 0 && leader != s.cfg.Member.ID {
		return &shard.NotLeaderError{ShardID: shard.MetaShardID, Leader: leader}
	}
	return nil
}

// currentHeader is a response header at the cluster's current revision.
func (l *leaseServer) currentHeader(ctx context.Context) (*pb.ResponseHeader, error) {
	h := &pb.ResponseHeader{}
	if err := l.s.fillHeaderCurrent(ctx, h); err != nil {
		return nil, err
	}
	return h, nil
}

func (l *leaseServer) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	return atMetaLeader(l.s, ctx, true, func() (*pb.LeaseGrantResponse, error) { return l.leaseGrantHere(ctx, r) },
		func(ctx context.Context, conn *grpc.ClientConn) (*pb.LeaseGrantResponse, error) {
			return pb.NewLeaseClient(conn).LeaseGrant(ctx, r)
		})
}

func (l *leaseServer) leaseGrantHere(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	var id, ttl int64
	err := txncoord.Retry(ctx, func() (err error) {
		id, ttl, err = l.s.lessor.Grant(ctx, r.ID, r.TTL)
		return err
	})
	if err != nil {
		return nil, toGRPCError(ctx, err)
	}
	h, err := l.currentHeader(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.LeaseGrantResponse{Header: h, ID: id, TTL: ttl}, nil
}

func (l *leaseServer) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	return atMetaLeader(l.s, ctx, true, func() (*pb.LeaseRevokeResponse, error) { return l.leaseRevokeHere(ctx, r) },
		func(ctx context.Context, conn *grpc.ClientConn) (*pb.LeaseRevokeResponse, error) {
			return pb.NewLeaseClient(conn).LeaseRevoke(ctx, r)
		})
}

func (l *leaseServer) leaseRevokeHere(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	if err := txncoord.Retry(ctx, func() error { return l.s.lessor.Revoke(ctx, r.ID) }); err != nil {
		return nil, toGRPCError(ctx, err)
	}
	h, err := l.currentHeader(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.LeaseRevokeResponse{Header: h}, nil
}

func (l *leaseServer) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	return atMetaLeader(l.s, ctx, false, func() (*pb.LeaseTimeToLiveResponse, error) { return l.leaseTimeToLiveHere(ctx, r) },
		func(ctx context.Context, conn *grpc.ClientConn) (*pb.LeaseTimeToLiveResponse, error) {
			return pb.NewLeaseClient(conn).LeaseTimeToLive(ctx, r)
		})
}

func (l *leaseServer) leaseTimeToLiveHere(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	var info *txncoord.LeaseInfo
	err := txncoord.Retry(ctx, func() (err error) {
		info, err = l.s.lessor.TimeToLive(ctx, r.ID, r.Keys)
		return err
	})
	h, herr := l.currentHeader(ctx)
	if herr != nil {
		return nil, herr
	}
	if errors.Is(err, mvcc.ErrLeaseNotFound) {
		// etcd answers an unknown lease with TTL -1, not an error.
		return &pb.LeaseTimeToLiveResponse{Header: h, ID: r.ID, TTL: -1}, nil
	}
	if err != nil {
		return nil, toGRPCError(ctx, err)
	}
	return &pb.LeaseTimeToLiveResponse{Header: h, ID: info.ID, TTL: info.TTL, GrantedTTL: info.GrantedTTL, Keys: info.Keys}, nil
}

func (l *leaseServer) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	return atMetaLeader(l.s, ctx, false, func() (*pb.LeaseLeasesResponse, error) { return l.leaseLeasesHere(ctx, r) },
		func(ctx context.Context, conn *grpc.ClientConn) (*pb.LeaseLeasesResponse, error) {
			return pb.NewLeaseClient(conn).LeaseLeases(ctx, r)
		})
}

func (l *leaseServer) leaseLeasesHere(ctx context.Context, _ *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	var ids []int64
	err := txncoord.Retry(ctx, func() (err error) {
		ids, err = l.s.lessor.Leases()
		return err
	})
	if err != nil {
		return nil, toGRPCError(ctx, err)
	}
	h, err := l.currentHeader(ctx)
	if err != nil {
		return nil, err
	}
	resp := &pb.LeaseLeasesResponse{Header: h, Leases: make([]*pb.LeaseStatus, len(ids))}
	for i, id := range ids {
		resp.Leases[i] = &pb.LeaseStatus{ID: id}
	}
	return resp, nil
}

// LeaseKeepAlive renews leases on a stream, one response per request; an
// unknown (or expired) lease is answered with TTL 0, as etcd does. On a
// member that does not lead the meta group, the stream is relayed to the
// leader.
func (l *leaseServer) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	ctx := stream.Context()
	if leader := shard.LeaderElsewhere(l.s.metaLeaderElsewhere()); leader != 0 && !isForwarded(ctx) {
		return l.relayKeepAlive(stream, leader)
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var ttl int64
		err = txncoord.Retry(ctx, func() (err error) {
			ttl, err = l.s.lessor.Renew(ctx, req.ID)
			return err
		})
		if errors.Is(err, mvcc.ErrLeaseNotFound) {
			ttl, err = 0, nil
		}
		if err != nil {
			return toGRPCError(ctx, err)
		}
		h := &pb.ResponseHeader{Revision: l.s.coord.LocalRevision()}
		l.s.fillHeader(h)
		if err := stream.Send(&pb.LeaseKeepAliveResponse{Header: h, ID: req.ID, TTL: ttl}); err != nil {
			return err
		}
	}
}

// relayKeepAlive relays a keep-alive stream to the meta group's leader
// until either side ends it. When the leader moves, the leader's side
// fails and so does the client's stream; the client opens a new one.
func (l *leaseServer) relayKeepAlive(stream pb.Lease_LeaseKeepAliveServer, leader uint64) error {
	conn, err := l.s.peers.conn(leader)
	if err != nil {
		return toGRPCError(stream.Context(), err)
	}
	ctx, cancel := context.WithCancel(forwarded(stream.Context()))
	defer cancel()
	up, err := pb.NewLeaseClient(conn).LeaseKeepAlive(ctx)
	if err != nil {
		return err
	}
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				_ = up.CloseSend()
				return
			}
			if err := up.Send(req); err != nil {
				return
			}
		}
	}()
	for {
		resp, err := up.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}
