package router

import (
	"context"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/basaltdb/basalt/internal/version"
	"github.com/basaltdb/basalt/proto/basaltpb"
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
		IsLearner:        st.IsLearner,
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

// MemberList lists the member registry as this node's meta replica has it
// (etcd answers from the local member's view too, unless linearizable is
// asked for).
func (c *clusterServer) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	resp := &pb.MemberListResponse{Header: &pb.ResponseHeader{}}
	for _, m := range c.s.cfg.Members() {
		resp.Members = append(resp.Members, etcdMember(m))
	}
	c.s.fillHeader(resp.Header)
	return resp, nil
}

// etcdMember is a registry member as etcd's Cluster API shows it.
func etcdMember(m *basaltpb.Member) *pb.Member {
	return &pb.Member{ID: m.Id, Name: m.Name, PeerURLs: m.PeerUrls, ClientURLs: m.ClientUrls, IsLearner: m.IsLearner}
}

// MoveLeader hands leadership to another member, as etcd's does: only the
// leader may be asked, and the target must be a voting member.
func (m *maintenanceServer) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	if m.s.status().Leader != m.s.cfg.Member.ID {
		return nil, rpctypes.ErrGRPCNotLeader
	}
	if !slices.ContainsFunc(m.s.cfg.Members(), func(mb *basaltpb.Member) bool { return mb.Id == r.TargetID && !mb.IsLearner }) {
		return nil, rpctypes.ErrGRPCBadLeaderTransferee
	}
	rctx, cancel := m.s.requestContext(ctx)
	defer cancel()
	if err := m.s.cfg.MoveLeader(rctx, r.TargetID); err != nil {
		return nil, toGRPCError(ctx, err)
	}
	resp := &pb.MoveLeaderResponse{Header: &pb.ResponseHeader{}}
	if err := m.s.fillHeaderCurrent(ctx, resp.Header); err != nil {
		return nil, err
	}
	return resp, nil
}
