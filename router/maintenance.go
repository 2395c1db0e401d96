package router

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/basaltdb/basalt/internal/version"
)

// defaultQuotaBytes is etcd's default backend quota (2 GiB), reported in
// Status.
const defaultQuotaBytes = 2 << 30

// maintenanceServer is etcd's Maintenance service: Status, HashKV and the
// alarm list.
type maintenanceServer struct {
	pb.UnimplementedMaintenanceServer
	s *Server
}

func (m *maintenanceServer) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	st := m.s.status()
	resp := &pb.StatusResponse{
		Header:           &pb.ResponseHeader{},
		Version:          version.Etcd,
		DbSize:           st.DBSize,
		DbSizeInUse:      st.DBSize,
		Leader:           st.Leader,
		RaftIndex:        st.RaftIndex,
		RaftTerm:         st.RaftTerm,
		RaftAppliedIndex: st.RaftAppliedIndex,
		DbSizeQuota:      defaultQuotaBytes,
		StorageVersion:   version.Storage,
		DowngradeInfo:    &pb.DowngradeInfo{},
	}
	if st.Leader == 0 {
		resp.Errors = append(resp.Errors, "etcdserver: no leader")
	}
	if err := m.s.fillHeaderCurrent(ctx, resp.Header); err != nil {
		return nil, err
	}
	return resp, nil
}

func (m *maintenanceServer) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	h, rev, err := m.s.coord.HashKV(ctx, r.Revision)
	if err != nil {
		return nil, toGRPCError(ctx, err)
	}
	resp := &pb.HashKVResponse{
		Header:          &pb.ResponseHeader{Revision: rev},
		Hash:            h.Hash,
		CompactRevision: h.CompactRevision,
		HashRevision:    h.Revision,
	}
	m.s.fillHeader(resp.Header)
	return resp, nil
}

// Alarm answers GET with no alarms; Basalt raises none yet.
func (m *maintenanceServer) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	if r.Action != pb.AlarmRequest_GET {
		return nil, rpctypes.ErrGRPCNotCapable
	}
	resp := &pb.AlarmResponse{Header: &pb.ResponseHeader{}}
	if err := m.s.fillHeaderCurrent(ctx, resp.Header); err != nil {
		return nil, err
	}
	return resp, nil
}

// clusterServer is etcd's Cluster service.
type clusterServer struct {
	pb.UnimplementedClusterServer
	s *Server
}

func (c *clusterServer) MemberList(ctx context.Context, _ *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	resp := &pb.MemberListResponse{Header: &pb.ResponseHeader{}, Members: []*pb.Member{c.s.cfg.Member}}
	c.s.fillHeader(resp.Header)
	return resp, nil
}
