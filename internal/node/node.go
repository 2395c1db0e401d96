package node

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"

	"github.com/basaltdb/basalt/internal/logging"
	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/placement"
	"github.com/basaltdb/basalt/proto/basaltpb"
	"github.com/basaltdb/basalt/router"
	"github.com/basaltdb/basalt/shard"
	"github.com/basaltdb/basalt/txncoord"
	"github.com/basaltdb/basalt/watchfanout"
)

// Config is a node's configuration, etcd's flags by another name.
type Config struct {
	Name    string
	DataDir string
	// ListenClientURLs are served (gRPC and HTTP on each).
	ListenClientURLs []string
	// AdvertiseClientURLs are what MemberList tells clients.
	AdvertiseClientURLs []string
	// ListenPeerURL is where the Raft transport listens.
	ListenPeerURL string
	// AdvertisePeerURL is the Raft address other nodes reach.
	AdvertisePeerURL  string
	ClusterToken      string
	HeartbeatInterval time.Duration
	ElectionTimeout   time.Duration
	MaxRequestBytes   int
	MaxTxnOps         int
	EnablePprof       bool
	// WatchProgressNotifyInterval is etcd's --watch-progress-notify-interval.
	WatchProgressNotifyInterval time.Duration
	// LeaseCheckpointInterval is how often the remaining TTLs of leases
	// are recorded (etcd's --experimental-lease-checkpoint-interval).
	LeaseCheckpointInterval time.Duration
	// LeaseOrphanInterval is how often the lessor looks for keys left
	// attached to leases that no longer exist (default 1 minute).
	LeaseOrphanInterval time.Duration
	// InitialCluster is etcd's --initial-cluster: name=peer-url for every
	// member of a new cluster (default: this node alone).
	InitialCluster string
	// InitialClusterState is etcd's --initial-cluster-state: "new" or
	// "existing".
	InitialClusterState string
	// SnapshotCount is etcd's --snapshot-count: applied writes between
	// Raft snapshots (default 10,000).
	SnapshotCount uint64
	// ShardSplitSize splits a shard at its middle key when its data on
	// disk passes this many bytes (0: never by itself).
	ShardSplitSize int64
	// ShardSplitCheckInterval is how often shard sizes are checked
	// (default 10 s).
	ShardSplitCheckInterval time.Duration
	// LockTTL is how long a transaction across shards that this node
	// coordinates may hold its locks before the shards resolve them
	// (default txncoord.DefaultLockTTL).
	LockTTL time.Duration
	// GossipAddr is where this node's memberlist gossip listens (TCP and
	// UDP; default: the peer URL's host, port + 1).
	GossipAddr string
	// Join is the gossip address of any member of a running cluster: this
	// node asks to be added (MemberAdd) and joins it.
	Join string
	// TransportFactory replaces the Raft transport (tests inject faults).
	TransportFactory config.TransportFactory
	Logger           *zap.Logger
}

// Validate checks the config and fills in etcd's defaults.
func (c *Config) Validate() error {
	if c.Name == "" {
		c.Name = "default"
	}
	if c.DataDir == "" {
		c.DataDir = c.Name + ".basalt"
	}
	if len(c.ListenClientURLs) == 0 {
		c.ListenClientURLs = []string{"http://127.0.0.1:2379"}
	}
	if len(c.AdvertiseClientURLs) == 0 {
		c.AdvertiseClientURLs = c.ListenClientURLs
	}
	if c.ListenPeerURL == "" {
		c.ListenPeerURL = "http://127.0.0.1:2380"
	}
	if c.AdvertisePeerURL == "" {
		c.AdvertisePeerURL = c.ListenPeerURL
	}
	if c.ClusterToken == "" {
		c.ClusterToken = "etcd-cluster"
	}
	if c.InitialCluster == "" {
		c.InitialCluster = c.Name + "=" + c.AdvertisePeerURL
	}
	switch c.InitialClusterState {
	case "":
		c.InitialClusterState = "new"
	case "new", "existing":
	default:
		return fmt.Errorf("node: --initial-cluster-state must be new or existing, not %q", c.InitialClusterState)
	}
	for _, u := range append(append([]string{}, c.ListenClientURLs...), c.ListenPeerURL, c.AdvertisePeerURL) {
		if _, err := hostPort(u); err != nil {
			return err
		}
	}
	if c.GossipAddr == "" {
		peer, _ := hostPort(c.ListenPeerURL)
		host, port, _ := net.SplitHostPort(peer)
		p, err := strconv.Atoi(port)
		if err != nil {
			return fmt.Errorf("node: peer URL %q: %w", c.ListenPeerURL, err)
		}
		c.GossipAddr = net.JoinHostPort(host, strconv.Itoa(p+1))
	}
	if c.ShardSplitSize < 0 {
		return fmt.Errorf("node: --shard-split-size must not be negative, not %d", c.ShardSplitSize)
	}
	if c.ShardSplitCheckInterval <= 0 {
		c.ShardSplitCheckInterval = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}

// hostPort returns the host:port of an http URL.
func hostPort(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("node: bad URL %q: %w", raw, err)
	}
	if u.Scheme != "http" {
		return "", fmt.Errorf("node: URL %q: only http:// is supported", raw)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return "", fmt.Errorf("node: URL %q needs host:port: %w", raw, err)
	}
	return u.Host, nil
}

// Node is a running Basalt node.
type Node struct {
	cfg       Config
	lg        *zap.Logger
	host      *placement.Host
	tso       *txncoord.TSO
	tsoClient *txncoord.TSOClient
	peers     *router.Peers
	gossip    *placement.Gossip
	// stopping is closed when Stop begins.
	stopping chan struct{}
	// background runs until Stop: the size check that splits shards.
	background sync.WaitGroup
	cancelBg   context.CancelFunc
	coord      *txncoord.Coordinator
	lessor     *txncoord.Lessor
	hub        *watchfanout.Hub
	server     *router.Server
	listeners  []net.Listener
	member     *pb.Member
	// metaLeaderSeen is the meta group's leader as the last leader change
	// event named it (metaEventSeen: there was one); metaChanged wakes
	// keepMetaRoles after each change, and metaLessor is the lessor it
	// promotes, once there is one.
	metaLeaderSeen atomic.Uint64
	metaEventSeen  atomic.Bool
	metaChanged    chan struct{}
	metaLessor     atomic.Pointer[txncoord.Lessor]
	// relay caches upstreams' answer.
	relay atomic.Pointer[relayState]
}

// Start starts a node and returns once it serves clients.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logging.RouteDragonboat(cfg.Logger)
	raftListen, _ := hostPort(cfg.ListenPeerURL)
	raftAddr, _ := hostPort(cfg.AdvertisePeerURL)
	n := &Node{cfg: cfg, lg: cfg.Logger, stopping: make(chan struct{}), metaChanged: make(chan struct{}, 1)}
	bg, cancelBg := context.WithCancel(context.Background())
	n.cancelBg = cancelBg
	defer func() {
		if err != nil {
			n.Stop() // what was started
		}
	}()
	n.gossip, err = placement.StartGossip(cfg.GossipAddr, placement.GossipMeta{
		Name: cfg.Name, PeerURLs: []string{cfg.AdvertisePeerURL}, ClientURLs: cfg.AdvertiseClientURLs,
	}, cfg.Logger)
	if err != nil {
		return nil, err
	}
	id, initial, join, err := n.identity(ctx)
	if err != nil {
		return nil, err
	}
	n.host, err = placement.Start(placement.Config{
		Name:              cfg.Name,
		DataDir:           cfg.DataDir,
		RaftAddress:       raftAddr,
		ListenAddress:     raftListen,
		ClusterToken:      cfg.ClusterToken,
		MemberID:          id,
		InitialCluster:    initial,
		Join:              join,
		TransportFactory:  cfg.TransportFactory,
		HeartbeatInterval: cfg.HeartbeatInterval,
		ElectionTimeout:   cfg.ElectionTimeout,
		SnapshotCount:     cfg.SnapshotCount,
		Logger:            cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	if !n.host.HasMeta() {
		return nil, fmt.Errorf("node: member %x holds no replica; add it with MemberAdd and start it with --initial-cluster-state existing", id)
	}
	if err = n.host.Bootstrap(ctx); err != nil {
		return nil, err
	}
	n.peers = router.NewPeers(n.host.Meta().Member)
	n.tso = txncoord.NewTSO(n.host.MetaGroup(), 0)
	n.host.OnLeaderChange(n.metaLeaderChanged)
	n.background.Go(func() { n.keepMetaRoles(bg) })
	n.tsoClient = txncoord.NewTSOClient(txncoord.NewRoutedTSO(n.tso, n.host.ReplicaID(), n.metaLeader, n.peers))
	if err = n.host.StartDataShards(ctx, n.tsoClient, n.host.Meta()); err != nil {
		return nil, err
	}
	if err = n.host.PromoteSelf(ctx); err != nil {
		return nil, fmt.Errorf("node: promote to a voting member: %w", err)
	}
	// The range cache follows this node's meta replica: catch it up first.
	if err = n.host.MetaGroup().Sync(ctx); err != nil {
		return nil, err
	}
	n.coord = txncoord.NewCoordinator(n.tsoClient, txncoord.NewRangeCacheFrom(n.host.Meta()), n.host, n.host.MetaGroup(), n.host.Meta(), cfg.Logger)
	n.coord.SetPeers(n.peers)
	if cfg.LockTTL > 0 {
		n.coord.SetLockTTL(cfg.LockTTL)
	}
	n.background.Go(func() { n.coord.SweepTxnRecords(bg) })
	n.hub = watchfanout.NewHub(nil, n.coord.CurrentRevision, cfg.Logger)
	serve := func(r *shard.Replica) {
		r.SetRemoteResolver(n.coord.ResolveRemote)
		r.SetLockResolver(n.coord.ResolveLock)
		n.hub.AddSource(r)
	}
	for _, r := range n.host.WatchReplicas(serve) {
		serve(r)
	}
	n.lessor = txncoord.NewLessor(txncoord.LessorConfig{
		MinTTL:             txncoord.MinLeaseTTL(n.host.RaftTimings()),
		CheckpointInterval: cfg.LeaseCheckpointInterval,
		OrphanInterval:     cfg.LeaseOrphanInterval,
		Logger:             cfg.Logger,
	}, n.host.MetaGroup(), n.host.Meta(), n.coord)
	n.metaLessor.Store(n.lessor)
	n.wakeMetaRoles()
	// The TSO and the lessor serve where the meta group's leader is; its
	// election may have been reported before the watcher was registered.
	// Both starts are idempotent: keepMetaRoles may run them too.
	n.startLeaderRole(ctx, "tso", n.tso.Start)
	n.startLeaderRole(ctx, "lessor", n.lessor.Promote)

	n.member = &pb.Member{
		ID:         id,
		Name:       cfg.Name,
		PeerURLs:   []string{cfg.AdvertisePeerURL},
		ClientURLs: cfg.AdvertiseClientURLs,
	}
	for _, u := range cfg.ListenClientURLs {
		addr, _ := hostPort(u)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("node: listen for clients: %w", err)
		}
		n.listeners = append(n.listeners, l)
	}
	n.server, err = router.New(router.Config{
		ClusterID:       clusterID(cfg.ClusterToken),
		Member:          n.member,
		Members:         n.host.Meta().Members,
		Peers:           n.peers,
		MetaLeader:      n.metaLeader,
		TSO:             n.tso,
		MoveLeader:      n.moveLeader,
		Membership:      n.host,
		MaxRequestBytes: cfg.MaxRequestBytes,
		MaxTxnOps:       cfg.MaxTxnOps,
		Status:          n.status,
		Upstreams:       n.upstreams,
		Defragment:      n.host.Store().Defragment,
		Backup:          n.backup,
		SpoolDir:        cfg.DataDir,
		RaftTerm:        n.raftTerm,
		SelfEndpoint:    selfEndpoint(n.listeners[0].Addr()),
		EnablePprof:     cfg.EnablePprof,
		Logger:          cfg.Logger,

		WatchProgressNotifyInterval: cfg.WatchProgressNotifyInterval,
	}, n.coord, n.hub, n.lessor)
	if err != nil {
		return nil, err
	}
	for _, l := range n.listeners {
		if err := n.server.Serve(l); err != nil {
			return nil, err
		}
	}
	// Publish this member's name and client URLs: other members forward
	// requests to them, and MemberList shows them.
	if err := n.host.PublishSelf(ctx, cfg.Name, cfg.AdvertiseClientURLs); err != nil {
		return nil, fmt.Errorf("node: publish member: %w", err)
	}
	if cfg.ShardSplitSize > 0 {
		n.background.Go(func() { n.coord.SplitLargeLoop(bg, cfg.ShardSplitSize, cfg.ShardSplitCheckInterval) })
	}
	n.lg.Info("ready-to-serve", zap.String("name", cfg.Name), zap.String("member-id", fmt.Sprintf("%x", n.member.ID)), zap.Strings("client-urls", cfg.ListenClientURLs), zap.String("data-dir", cfg.DataDir))
	return n, nil
}

// identity returns this member's id: from --initial-cluster, or, with
// --join, from the cluster found through the gossip (which adds this node
// as a member if it is not one yet). It also returns the initial cluster,
// and whether this node joins a running cluster.
func (n *Node) identity(ctx context.Context) (id uint64, initial []*basaltpb.Member, join bool, err error) {
	cfg := n.cfg
	if cfg.Join != "" {
		if err := n.gossip.Join(cfg.Join); err != nil {
			return 0, nil, false, err
		}
		id, err := n.gossip.JoinCluster(ctx, []string{cfg.AdvertisePeerURL})
		return id, nil, true, err
	}
	initial, err = placement.ParseInitialCluster(cfg.InitialCluster, cfg.ClusterToken)
	if err != nil {
		return 0, nil, false, err
	}
	i := slices.IndexFunc(initial, func(m *basaltpb.Member) bool { return m.Name == cfg.Name })
	if i < 0 {
		return 0, nil, false, fmt.Errorf("node: couldn't find local name %q in the initial cluster configuration", cfg.Name)
	}
	if !slices.Contains(initial[i].PeerUrls, cfg.AdvertisePeerURL) {
		return 0, nil, false, fmt.Errorf("node: --initial-cluster has %s=%s but missing from --initial-advertise-peer-urls=%s",
			cfg.Name, strings.Join(initial[i].PeerUrls, ","), cfg.AdvertisePeerURL)
	}
	return initial[i].Id, initial, cfg.InitialClusterState == "existing", nil
}

// backup writes a backup of the key space and the leases
// (Maintenance.Snapshot). Every member holds a replica of every shard, so
// any member can take it.
func (n *Node) backup(ctx context.Context, w io.Writer) error {
	return n.coord.Backup(ctx, w, func() []mvcc.BackupLease {
		var leases []mvcc.BackupLease
		for _, l := range n.host.Meta().Leases() {
			leases = append(leases, mvcc.BackupLease{ID: l.Id, TTL: l.Ttl})
		}
		return leases
	})
}

// metaLeader returns the member that leads the meta group (0 when unknown).
func (n *Node) metaLeader() uint64 {
	leader, _ := n.host.Leader(shard.MetaShardID)
	return leader
}

// moveLeader hands the leadership of every group this node leads to target
// and waits until the data shard's leader moved.
func (n *Node) moveLeader(ctx context.Context, target uint64) error {
	groups := []uint64{shard.MetaShardID}
	for _, r := range n.host.Replicas() {
		groups = append(groups, r.ShardID())
	}
	var moved []uint64
	for _, g := range groups {
		if leader, _ := n.host.Leader(g); leader == n.host.ReplicaID() {
			if err := n.host.TransferLeader(g, target); err != nil {
				return err
			}
			moved = append(moved, g)
		}
	}
	for _, g := range moved {
		for {
			if leader, _ := n.host.Leader(g); leader == target {
				break
			}
			select {
			case <-time.After(10 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// selfEndpoint is the URL this node reaches itself on through a listener.
func selfEndpoint(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || tcp.IP.IsUnspecified() {
		return fmt.Sprintf("http://127.0.0.1:%d", tcp.Port)
	}
	return "http://" + tcp.String()
}

// metaLeaderChanged notes the meta group's new leader. The TSO stops here
// at once when another member leads; keepMetaRoles does the rest.
func (n *Node) metaLeaderChanged(info raftio.LeaderInfo) {
	if info.ShardID != shard.MetaShardID || n.tso == nil {
		return
	}
	n.metaLeaderSeen.Store(info.LeaderID)
	n.metaEventSeen.Store(true)
	if info.LeaderID != n.host.ReplicaID() {
		n.tso.Stop()
	}
	n.wakeMetaRoles()
}

func (n *Node) wakeMetaRoles() {
	select {
	case n.metaChanged <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// keepMetaRoles runs the TSO and the lessor where the meta group's leader
// is and stops the lessor elsewhere, one change at a time: a lessor being
// promoted while leadership moves on is demoted at the next wake-up. The
// leader also adds a new cluster's gateways to the meta group.
func (n *Node) keepMetaRoles(ctx context.Context) {
	for {
		select {
		case <-n.metaChanged:
		case <-ctx.Done():
			return
		}
		lessor := n.metaLessor.Load()
		if !n.leadsMeta() {
			if lessor != nil {
				lessor.Demote()
			}
			continue
		}
		n.startLeaderRole(ctx, "tso", n.tso.Start)
		if lessor != nil {
			n.startLeaderRole(ctx, "lessor", lessor.Promote)
		}
		n.startLeaderRole(ctx, "initial-gateways", n.host.AddInitialGateways)
	}
}

// leadsMeta tells whether this node leads the meta group by the last
// leader change event. Events arrive before dragonboat's leader query
// reflects them (a new leader asking it would not see itself yet); the
// query serves only until the first event, for an election that was over
// before this node registered for events.
func (n *Node) leadsMeta() bool {
	if n.metaEventSeen.Load() {
		return n.metaLeaderSeen.Load() == n.host.ReplicaID()
	}
	return n.IsMetaLeader()
}

// startLeaderRole runs start (the TSO's or the lessor's) until it succeeds,
// this node no longer leads the meta group (a later change starts it where
// it belongs), or the node stops. A new leader serves reads only once it
// committed an entry of its term, and a loaded machine may take a while:
// the role must not stay unstarted on the leader.
func (n *Node) startLeaderRole(ctx context.Context, role string, start func(context.Context) error) {
	backoff := time.Millisecond
	for n.leadsMeta() {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := start(actx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return
		}
		n.lg.Debug("start-"+role, zap.Error(err))
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, time.Second)
	}
}

// ClientAddrs returns the addresses the node serves clients on.
func (n *Node) ClientAddrs() []string {
	out := make([]string, len(n.listeners))
	for i, l := range n.listeners {
		out[i] = l.Addr().String()
	}
	return out
}

// Stop stops serving, stops the writers, lowers the TSO ceiling so that the
// next start continues without a revision gap, and closes the store.
func (n *Node) Stop() {
	close(n.stopping)
	if n.cancelBg != nil {
		n.cancelBg()
	}
	n.background.Wait()
	if n.server != nil {
		n.server.Stop()
	}
	if n.hub != nil {
		n.hub.Close()
	}
	if n.lessor != nil {
		n.lessor.Close()
	}
	if n.host != nil {
		for _, r := range n.host.Replicas() {
			r.Stop()
		}
	}
	if n.tso != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := n.tso.Release(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			n.lg.Warn("release-tso", zap.Error(err))
		}
		cancel()
	}
	if n.tsoClient != nil {
		n.tsoClient.Close()
	}
	if n.peers != nil {
		n.peers.Close()
	}
	if n.gossip != nil {
		n.gossip.Close()
	}
	if n.host != nil {
		n.host.Close()
	}
}

func (n *Node) dataReplica() *shard.Replica { return n.host.FirstReplica() }

func (n *Node) raftTerm() uint64 {
	if rep := n.dataReplica(); rep != nil {
		_, term := rep.Leader()
		return term
	}
	return 0
}

func (n *Node) status() router.NodeStatus {
	// As etcd's, but for the first: the index of the newest entry in the
	// Raft log (etcd: the newest committed one; they differ by the entries
	// being replicated), and that of the newest entry the state machine
	// applied. The state machines see only entries that carry commands, so
	// the applied index stays behind after elections and membership
	// changes.
	st := router.NodeStatus{DBSize: n.host.Store().DiskSize()}
	if rep := n.dataReplica(); rep != nil {
		// Replica ids are member ids.
		st.Leader, st.RaftTerm = rep.Leader()
		st.RaftIndex = n.host.LastIndex(rep.ShardID())
		st.RaftAppliedIndex = rep.Shard().AppliedIndex()
	} else {
		// A gateway: it holds the meta group's replica only.
		st.Leader, st.RaftTerm = n.host.Leader(shard.MetaShardID)
		st.RaftIndex = n.host.LastIndex(shard.MetaShardID)
		st.RaftAppliedIndex = n.host.Meta().AppliedIndex()
	}
	// A replica restored from a Raft snapshot has applied entries its log
	// does not hold.
	st.RaftIndex = max(st.RaftIndex, st.RaftAppliedIndex)
	if m := n.host.Meta().Member(n.host.ReplicaID()); m != nil {
		st.IsLearner = m.IsLearner
	}
	return st
}

// relayState is what upstreams found for a generation of the shard
// descriptors and a count of this node's replicas.
type relayState struct {
	gen  uint64
	held int
	ups  []uint64
}

// upstreams returns, on a gateway (a member that holds no replica of some
// data shard), the members that hold every shard, the meta group's leader
// (as it was when the descriptors or this node's replicas last changed)
// first: the router relays the gateway's requests to them. It returns nil
// on a member that holds them all.
func (n *Node) upstreams() []uint64 {
	gen, held := n.host.Meta().ShardsGen(), n.host.ReplicaCount()
	if st := n.relay.Load(); st != nil && st.gen == gen && st.held == held {
		return st.ups
	}
	descs, gen := n.host.Meta().Shards()
	holders := make(map[uint64]int)
	full := true
	for _, d := range descs {
		if _, err := n.host.Replica(d.ShardId); err != nil {
			full = false
		}
		for id := range d.Replicas {
			holders[id]++
		}
	}
	var ups []uint64
	if !full {
		for id, c := range holders {
			if c == len(descs) && id != n.host.ReplicaID() {
				ups = append(ups, id)
			}
		}
		slices.Sort(ups)
		if i := slices.Index(ups, n.metaLeader()); i > 0 {
			ups[0], ups[i] = ups[i], ups[0]
		}
	}
	n.relay.Store(&relayState{gen: gen, held: held, ups: ups})
	return ups
}

// clusterID derives the cluster id from the cluster token.
func clusterID(token string) uint64 { return fnv64("cluster\x00" + token) }

func fnv64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// InFlight returns the number of client and member requests the node is
// serving now.
func (n *Node) InFlight() int64 { return n.server.InFlight() }

// MemberID returns the node's member id.
func (n *Node) MemberID() uint64 { return n.host.ReplicaID() }

// LogSyncs returns how many syncs of its Raft log store the node's
// sequencers have seen end, and how many the store skipped (a commit
// index alone needed them).
func (n *Node) LogSyncs() (ended, skipped uint64) { return n.host.LogSyncs() }

// SnapshotsRequested returns how many snapshots of its data shard
// replicas the node asked for after --snapshot-count writes.
func (n *Node) SnapshotsRequested() uint64 { return n.host.SnapshotsRequested() }

// DataLogRange returns the first and last index of the Raft log entries
// the node keeps for its first data shard.
func (n *Node) DataLogRange() (first, last uint64, err error) {
	rep := n.dataReplica()
	if rep == nil {
		return 0, 0, errors.New("node: no data shard replica")
	}
	return n.host.LogRange(rep.ShardID())
}

// IsMetaLeader tells whether this node leads the meta group.
func (n *Node) IsMetaLeader() bool { return n.metaLeader() == n.host.ReplicaID() }

// DataReplicas returns how many data shard replicas this node holds (none
// on a gateway).
func (n *Node) DataReplicas() int { return n.host.ReplicaCount() }

// TxnRecords returns how many commit records of transactions across
// shards this node's replicas keep (see mvcc.Shard.TxnRecords).
func (n *Node) TxnRecords() (int, error) {
	total := 0
	for _, r := range n.host.Replicas() {
		recs, err := r.Shard().TxnRecords()
		if err != nil {
			return 0, err
		}
		total += len(recs)
	}
	return total, nil
}

// IsDataLeader tells whether this node leads a data shard.
func (n *Node) IsDataLeader() bool {
	rep := n.dataReplica()
	return rep != nil && rep.IsLeader()
}
