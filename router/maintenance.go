package router

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/internal/version"
	"github.com/basaltdb/basalt/proto/basaltpb"
)

// defaultQuotaBytes is etcd's default backend quota (2 GiB), reported in
// Status.
const defaultQuotaBytes = 2 << 30

// maintenanceServer is etcd's Maintenance service: Status, HashKV, the
// alarm list, Defragment, Snapshot and MoveLeader.
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

// Defragment compacts this member's store, as etcd defragments its
// backend: space that deleted data held is given back.
func (m *maintenanceServer) Defragment(ctx context.Context, _ *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	if err := m.s.cfg.Defragment(ctx); err != nil {
		return nil, toGRPCError(ctx, err)
	}
	resp := &pb.DefragmentResponse{Header: &pb.ResponseHeader{}}
	if err := m.s.fillHeaderCurrent(ctx, resp.Header); err != nil {
		return nil, err
	}
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

// MemberList lists the member registry as this node's meta replica has it,
// after catching up with the meta group when linearizable is asked for (as
// clientv3 does by default).
func (c *clusterServer) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	if r.Linearizable {
		rctx, cancel := c.s.requestContext(ctx)
		defer cancel()
		if err := c.s.cfg.Membership.SyncMembers(rctx); err != nil {
			return nil, toGRPCError(ctx, err)
		}
	}
	return &pb.MemberListResponse{Header: c.header(), Members: c.members()}, nil
}

func (c *clusterServer) MemberAdd(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	if len(r.PeerURLs) == 0 {
		return nil, rpctypes.ErrGRPCMemberBadURLs
	}
	return atMetaLeader(c.s, ctx, true, func() (*pb.MemberAddResponse, error) {
		m, err := c.s.cfg.Membership.AddMember(ctx, r.PeerURLs, r.IsLearner)
		if err != nil {
			return nil, err
		}
		return &pb.MemberAddResponse{Header: c.header(), Member: etcdMember(m), Members: c.members()}, nil
	}, func(ctx context.Context, conn *grpc.ClientConn) (*pb.MemberAddResponse, error) {
		return pb.NewClusterClient(conn).MemberAdd(ctx, r)
	})
}

func (c *clusterServer) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	return atMetaLeader(c.s, ctx, true, func() (*pb.MemberRemoveResponse, error) {
		if err := c.s.cfg.Membership.RemoveMember(ctx, r.ID); err != nil {
			return nil, err
		}
		return &pb.MemberRemoveResponse{Header: c.header(), Members: c.members()}, nil
	}, func(ctx context.Context, conn *grpc.ClientConn) (*pb.MemberRemoveResponse, error) {
		return pb.NewClusterClient(conn).MemberRemove(ctx, r)
	})
}

func (c *clusterServer) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	if len(r.PeerURLs) == 0 {
		return nil, rpctypes.ErrGRPCMemberBadURLs
	}
	return atMetaLeader(c.s, ctx, true, func() (*pb.MemberUpdateResponse, error) {
		if err := c.s.cfg.Membership.UpdateMember(ctx, r.ID, r.PeerURLs); err != nil {
			return nil, err
		}
		return &pb.MemberUpdateResponse{Header: c.header(), Members: c.members()}, nil
	}, func(ctx context.Context, conn *grpc.ClientConn) (*pb.MemberUpdateResponse, error) {
		return pb.NewClusterClient(conn).MemberUpdate(ctx, r)
	})
}

func (c *clusterServer) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	return atMetaLeader(c.s, ctx, true, func() (*pb.MemberPromoteResponse, error) {
		if err := c.s.cfg.Membership.PromoteMember(ctx, r.ID); err != nil {
			return nil, err
		}
		return &pb.MemberPromoteResponse{Header: c.header(), Members: c.members()}, nil
	}, func(ctx context.Context, conn *grpc.ClientConn) (*pb.MemberPromoteResponse, error) {
		return pb.NewClusterClient(conn).MemberPromote(ctx, r)
	})
}

func (c *clusterServer) header() *pb.ResponseHeader {
	h := &pb.ResponseHeader{}
	c.s.fillHeader(h)
	return h
}

func (c *clusterServer) members() []*pb.Member {
	var out []*pb.Member
	for _, m := range c.s.cfg.Members() {
		out = append(out, etcdMember(m))
	}
	return out
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

// snapshotChunk is the size of the blobs Snapshot sends (etcd's).
const snapshotChunk = 32 << 10

// spoolPattern names the files Snapshot spools backups to.
const spoolPattern = "snapshot-*.part"

// removeSpooledSnapshots removes backups a Snapshot call spooled to dir and
// did not remove (the process stopped while it streamed).
func removeSpooledSnapshots(dir string, lg *zap.Logger) {
	if dir == "" {
		return
	}
	files, _ := filepath.Glob(filepath.Join(dir, spoolPattern))
	for _, f := range files {
		if err := os.Remove(f); err != nil {
			lg.Warn("remove-spooled-snapshot", zap.String("path", f), zap.Error(err))
		}
	}
}

// Snapshot streams a backup of the whole key space at the current revision
// (its format is in mvcc/backup.go): `etcdctl snapshot save` writes it to a
// file, and `basaltctl snapshot restore` makes a new cluster's data
// directories from that file. Like etcd, the first message carries the
// header and the size; the stream ends with the SHA-256 of what precedes it.
func (m *maintenanceServer) Snapshot(_ *pb.SnapshotRequest, srv grpc.ServerStreamingServer[pb.SnapshotResponse]) error {
	ctx := srv.Context()
	if m.s.cfg.Backup == nil {
		return status.Error(codes.Unimplemented, "method Snapshot not implemented")
	}
	f, err := os.CreateTemp(m.s.cfg.SpoolDir, spoolPattern)
	if err != nil {
		return toGRPCError(ctx, err)
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := m.s.cfg.Backup(ctx, bw); err != nil {
		return toGRPCError(ctx, err)
	}
	if err := bw.Flush(); err != nil {
		return toGRPCError(ctx, err)
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return toGRPCError(ctx, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return toGRPCError(ctx, err)
	}
	first := &pb.SnapshotResponse{Header: &pb.ResponseHeader{}, RemainingBytes: uint64(size), Version: version.Etcd}
	if err := m.s.fillHeaderCurrent(ctx, first.Header); err != nil {
		return err
	}
	if err := srv.Send(first); err != nil {
		return err
	}
	buf := make([]byte, snapshotChunk)
	for sent := int64(0); sent < size; {
		n, err := io.ReadFull(f, buf[:min(int64(len(buf)), size-sent)])
		if err != nil {
			return toGRPCError(ctx, err)
		}
		sent += int64(n)
		if err := srv.Send(&pb.SnapshotResponse{RemainingBytes: uint64(size - sent), Blob: buf[:n], Version: version.Etcd}); err != nil {
			return err
		}
	}
	return nil
}
