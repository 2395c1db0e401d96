package router

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/soheilhy/cmux"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/basaltdb/basalt/proto/basaltpb"
	"github.com/basaltdb/basalt/txncoord"
	"github.com/basaltdb/basalt/watchfanout"
)

// grpcOverheadBytes is what etcd allows a gRPC message beyond
// --max-request-bytes, so that an oversized request reaches the server and
// gets etcd's "request is too large" rather than a transport error.
const grpcOverheadBytes = 512 * 1024

// Membership is the Cluster API's changes of members (placement.Host).
type Membership interface {
	AddMember(ctx context.Context, peerURLs []string, learner bool) (*basaltpb.Member, error)
	RemoveMember(ctx context.Context, id uint64) error
	UpdateMember(ctx context.Context, id uint64, peerURLs []string) error
	PromoteMember(ctx context.Context, id uint64) error
	// SyncMembers returns once this node's registry has every change
	// committed before the call.
	SyncMembers(ctx context.Context) error
}

// NodeStatus is what Maintenance.Status reports of the node.
type NodeStatus struct {
	// Leader is the member id of the data shard's leader, 0 when unknown.
	Leader           uint64
	IsLearner        bool
	RaftTerm         uint64
	RaftIndex        uint64
	RaftAppliedIndex uint64
	DBSize           int64
}

// Config configures the client-facing server.
type Config struct {
	ClusterID uint64
	// Member is this node as MemberList shows it.
	Member *pb.Member
	// MaxRequestBytes is etcd's --max-request-bytes (default 1.5 MiB).
	MaxRequestBytes int
	// MaxTxnOps is etcd's --max-txn-ops (default 128).
	MaxTxnOps int
	// RequestTimeout bounds the Status and Alarm calls of a client that set
	// no deadline. (KV requests are bounded by the coordinator.)
	RequestTimeout time.Duration
	// Members returns the member registry, which MemberList shows.
	Members func() []*basaltpb.Member
	// Peers reaches the other members, where requests are forwarded to.
	Peers *Peers
	// MetaLeader returns the member that leads the meta group (0 when
	// unknown); lease requests are served there.
	MetaLeader func() uint64
	// TSO is this node's timestamp oracle, which other members call while
	// this node leads the meta group.
	TSO txncoord.TSOServer
	// Membership changes the cluster's members; it runs on the meta group's
	// leader (requests elsewhere are forwarded).
	Membership Membership
	// MoveLeader hands the leadership of this node's groups to a member.
	MoveLeader func(ctx context.Context, target uint64) error
	// Status reports the node's Raft and storage status.
	Status func() NodeStatus
	// Upstreams returns, on a gateway (a member that holds no replica of
	// some data shard), the members to relay its calls to, best first
	// (relay.go); nil on a member that serves them. Nil: never relay.
	Upstreams func() []uint64
	// Defragment compacts the node's store (Maintenance.Defragment).
	Defragment func(ctx context.Context) error
	// Backup writes a backup of the key space (Maintenance.Snapshot).
	Backup func(ctx context.Context, w io.Writer) error
	// SpoolDir is where Maintenance.Snapshot writes the backup before it
	// streams it (the first message tells its size, as etcd's does).
	SpoolDir string
	// RaftTerm returns the term reported in response headers.
	RaftTerm func() uint64
	// SelfEndpoint is a client URL of this server, which the lock and
	// election services use.
	SelfEndpoint string
	// EnablePprof serves Go's profiles under /debug/pprof (etcd's
	// --enable-pprof).
	EnablePprof bool
	// WatchProgressNotifyInterval is how often watches with progress_notify
	// hear of progress when they get no events (etcd's
	// --watch-progress-notify-interval; default 10 minutes, at least 100 ms).
	WatchProgressNotifyInterval time.Duration
	Logger                      *zap.Logger
}

// Validate checks the config and fills in defaults.
func (c *Config) Validate() error {
	if c.Member == nil || c.Status == nil || c.RaftTerm == nil || c.SelfEndpoint == "" ||
		c.Members == nil || c.Peers == nil || c.Membership == nil || c.MetaLeader == nil || c.TSO == nil || c.MoveLeader == nil {
		return errors.New("router: config needs Member, Members, Peers, Membership, MetaLeader, TSO, MoveLeader, Status, RaftTerm and SelfEndpoint")
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = 1536 * 1024
	}
	if c.MaxRequestBytes < 0 {
		return errors.New("router: --max-request-bytes must be positive")
	}
	if c.MaxTxnOps == 0 {
		c.MaxTxnOps = 128
	}
	if c.MaxTxnOps < 0 {
		return errors.New("router: --max-txn-ops must be positive")
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 7 * time.Second
	}
	if c.WatchProgressNotifyInterval == 0 {
		c.WatchProgressNotifyInterval = 10 * time.Minute
	}
	c.WatchProgressNotifyInterval = max(c.WatchProgressNotifyInterval, minProgressInterval)
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}

// Server serves etcd's gRPC API and its HTTP/JSON gateway on the client
// listeners, one port for both as etcd does.
type Server struct {
	cfg    Config
	coord  *txncoord.Coordinator
	hub    *watchfanout.Hub
	lessor *txncoord.Lessor
	self   *clientv3.Client // for the lock and election services
	peers  *Peers
	fwd    *writeForwarder
	work   *workers // forwarding calls and forwarded writes
	grpc   *grpc.Server
	lg     *zap.Logger

	inFlight atomic.Int64 // unary requests being served

	mu      sync.Mutex
	muxes   []cmux.CMux
	https   []*http.Server
	gwConns []interface{ Close() error }
	wg      sync.WaitGroup
}

// streamWorkers is the number of goroutines gRPC keeps for requests. With
// 256, a member of three under 1,000 clients (about 330 requests in flight
// each) started goroutines for the rest, and growing their stacks took
// about 1% of its CPU.
const streamWorkers = 512

// New builds the server; Serve starts it on listeners.
func New(cfg Config, coord *txncoord.Coordinator, hub *watchfanout.Hub, lessor *txncoord.Lessor) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	work := newWorkers()
	s := &Server{cfg: cfg, coord: coord, hub: hub, lessor: lessor, lg: cfg.Logger, peers: cfg.Peers, work: work, fwd: newWriteForwarder(cfg.Peers, work)}
	removeSpooledSnapshots(cfg.SpoolDir, s.lg)
	// The lock and election services are etcd's own, written against a
	// client; like etcd, they get one of this server.
	self, err := clientv3.New(clientv3.Config{Endpoints: []string{cfg.SelfEndpoint}, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	s.self = self
	s.grpc = grpc.NewServer(
		grpc.MaxRecvMsgSize(cfg.MaxRequestBytes+grpcOverheadBytes),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.MaxConcurrentStreams(math.MaxUint32),
		// Run requests on long-lived goroutines. A new goroutine per
		// request grew its stack while decoding the request, and copying
		// the stack took 6% of a busy node's CPU. A request is on its
		// goroutine until its write commits, so the pool covers that many
		// requests in flight; more get goroutines of their own.
		grpc.NumStreamWorkers(streamWorkers),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: false}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Hour, Timeout: 20 * time.Second}),
		grpc.UnaryInterceptor(s.unary),
		grpc.StreamInterceptor(s.relayStream),
	)
	pb.RegisterKVServer(s.grpc, &kvServer{s: s})
	pb.RegisterWatchServer(s.grpc, &watchServer{s: s})
	pb.RegisterLeaseServer(s.grpc, &leaseServer{s: s})
	v3lockpb.RegisterLockServer(s.grpc, v3lock.NewLockServer(self))
	v3electionpb.RegisterElectionServer(s.grpc, v3election.NewElectionServer(self))
	pb.RegisterMaintenanceServer(s.grpc, &maintenanceServer{s: s})
	pb.RegisterClusterServer(s.grpc, &clusterServer{s: s})
	basaltpb.RegisterInternalServer(s.grpc, &internalServer{s: s})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s.grpc, hs)
	return s, nil
}

// unary is the unary interceptor: it counts the request in flight and
// relays it when this node is a gateway.
func (s *Server) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	return s.relayUnary(ctx, req, info, handler)
}

// InFlight returns the number of unary requests (KV, Lease, Cluster,
// Maintenance and the Internal calls of other members) being served now.
func (s *Server) InFlight() int64 { return s.inFlight.Load() }

// Serve serves gRPC and HTTP on l until Stop. It returns at once; serving
// goroutines are owned by the server.
func (s *Server) Serve(l net.Listener) error {
	m := cmux.New(l)
	grpcL := m.Match(cmux.HTTP2())
	httpL := m.Match(cmux.HTTP1Fast())
	handler, conn, err := s.httpHandler(l.Addr().String())
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Minute}
	s.mu.Lock()
	s.muxes = append(s.muxes, m)
	s.https = append(s.https, hs)
	s.gwConns = append(s.gwConns, conn)
	s.mu.Unlock()
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		_ = s.grpc.Serve(grpcL)
	}()
	go func() {
		defer s.wg.Done()
		_ = hs.Serve(httpL)
	}()
	go func() {
		defer s.wg.Done()
		if err := m.Serve(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, cmux.ErrListenerClosed) {
			s.lg.Debug("client-listener-closed", zap.Error(err))
		}
	}()
	return nil
}

// Stop stops accepting, ends open streams and waits for the serving
// goroutines.
func (s *Server) Stop() {
	s.mu.Lock()
	muxes, https, conns := s.muxes, s.https, s.gwConns
	s.muxes, s.https, s.gwConns = nil, nil, nil
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	for _, hs := range https {
		_ = hs.Close()
	}
	_ = s.self.Close()
	s.grpc.Stop()
	s.fwd.stop()
	s.work.stop()
	for _, m := range muxes {
		m.Close()
	}
	s.wg.Wait()
}

// requestContext bounds a request whose client set no deadline.
func (s *Server) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.cfg.RequestTimeout)
}

// fillHeader sets what etcd sets in every response header besides the
// revision.
func (s *Server) fillHeader(h *pb.ResponseHeader) {
	h.ClusterId = s.cfg.ClusterID
	h.MemberId = s.cfg.Member.ID
	h.RaftTerm = s.cfg.RaftTerm()
}

// fillHeaderCurrent fills a header with the current revision.
func (s *Server) fillHeaderCurrent(ctx context.Context, h *pb.ResponseHeader) error {
	rctx, cancel := s.requestContext(ctx)
	defer cancel()
	rev, err := s.coord.CurrentRevision(rctx)
	if err != nil {
		return toGRPCError(ctx, err)
	}
	h.Revision = rev
	s.fillHeader(h)
	return nil
}

func (s *Server) status() NodeStatus { return s.cfg.Status() }
