package placement

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	sm "github.com/lni/dragonboat/v4/statemachine"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/proto/basaltpb"
	"github.com/basaltdb/basalt/shard"
)

// FirstDataShardID is the data shard a new cluster starts with; it owns the
// whole key space.
const FirstDataShardID = 2

// Config configures a Host.
type Config struct {
	// Name is the node's human-readable name (etcd's --name).
	Name string
	// DataDir holds the node's Raft logs (raft/), data (data/), and a
	// "joined" mark when the node joined a running cluster.
	DataDir string
	// RaftAddress is the host:port other nodes reach this node's Raft
	// transport at.
	RaftAddress string
	// ListenAddress is where the Raft transport listens; empty means
	// RaftAddress.
	ListenAddress string
	// ClusterToken tells clusters apart (etcd's --initial-cluster-token).
	ClusterToken string
	// MemberID is this node's member id, which is also its replica id in
	// every group.
	MemberID uint64
	// InitialCluster is the members of a new cluster (etcd's
	// --initial-cluster); each holds a replica of the meta group and of the
	// first data shard. Ignored on restart.
	InitialCluster []*basaltpb.Member
	// Join starts this node as a member added to a running cluster
	// (MemberAdd, then --initial-cluster-state existing): it joins the
	// groups that list it instead of creating them. Ignored on restart.
	Join bool
	// TransportFactory replaces TCPTransport, the Raft transport (tests
	// inject faults with it).
	TransportFactory config.TransportFactory
	// HeartbeatInterval and ElectionTimeout are etcd's Raft timings.
	HeartbeatInterval time.Duration
	ElectionTimeout   time.Duration
	// SnapshotCount is etcd's --snapshot-count: a data shard's replica
	// takes a Raft snapshot (and compacts its log behind it) after so many
	// applied writes, the meta group's after so many entries. A data shard
	// also does after so many entries, writes or not.
	SnapshotCount uint64
	// CacheBytes sizes the Pebble block cache; 0 picks the default.
	CacheBytes int64
	Sequencer  shard.SequencerConfig
	Logger     *zap.Logger
}

// Validate checks the config and fills in defaults.
func (c *Config) Validate() error {
	if c.Name == "" {
		return errors.New("placement: a node needs a name")
	}
	if c.DataDir == "" {
		return errors.New("placement: a node needs a data directory")
	}
	if c.RaftAddress == "" {
		return errors.New("placement: a node needs a Raft address")
	}
	if c.MemberID == 0 {
		return errors.New("placement: a node needs a member id")
	}
	if c.ClusterToken == "" {
		c.ClusterToken = "etcd-cluster"
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 100 * time.Millisecond
	}
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = 1000 * time.Millisecond
	}
	if c.HeartbeatInterval < time.Millisecond || c.ElectionTimeout < 5*c.HeartbeatInterval {
		return fmt.Errorf("placement: election timeout %v must be at least 5 heartbeat intervals (%v)", c.ElectionTimeout, c.HeartbeatInterval)
	}
	if c.SnapshotCount == 0 {
		c.SnapshotCount = 10000
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}

// Host is one node's Raft machinery: its Pebble store, its dragonboat
// NodeHost, and the replicas it holds (the meta group's and data shards').
type Host struct {
	cfg       Config
	lg        *zap.Logger
	store     *mvcc.Store
	nh        *dragonboat.NodeHost
	meta      *shard.MetaStateMachine
	replicaID uint64
	// hasMeta tells whether this node holds a replica of the meta group.
	hasMeta bool
	// restartShards are the data shards this node held before a restart.
	restartShards []uint64
	// joining tells that this node joins a running cluster's groups.
	joining bool
	// nonVoting tells that this node's replicas start as non-voting ones
	// (it joined a running cluster, now or before a restart).
	nonVoting bool

	// tso and leases serve the data shards' sequencers (StartDataShards).
	tso    shard.RevisionAllocator
	leases mvcc.LeaseChecker

	mu       sync.Mutex
	dataSMs  map[uint64]*shard.DataStateMachine
	replicas map[uint64]*shard.Replica
	leaders  map[uint64]raftio.LeaderInfo
	watchers []func(raftio.LeaderInfo)
	started  []func(*shard.Replica)
	closing  bool
	// bg counts the goroutines that start split shards; closec stops them.
	bg     sync.WaitGroup
	closec chan struct{}
	// snapshots counts the snapshots of data shards requested by count of
	// writes that dragonboat accepted.
	snapshots atomic.Uint64
}

// RaftTimings returns the heartbeat interval and the election timeout.
func (h *Host) RaftTimings() (heartbeat, election time.Duration) {
	return h.cfg.HeartbeatInterval, h.cfg.ElectionTimeout
}

// Start opens the store, starts the NodeHost and the meta group's replica:
// the one it held before a restart, or, in a new cluster, one of the first
// members'.
func Start(cfg Config) (*Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &Host{
		cfg:       cfg,
		lg:        cfg.Logger,
		replicaID: cfg.MemberID,
		dataSMs:   make(map[uint64]*shard.DataStateMachine),
		replicas:  make(map[uint64]*shard.Replica),
		leaders:   make(map[uint64]raftio.LeaderInfo),
		closec:    make(chan struct{}),
	}
	store, err := mvcc.Open(filepath.Join(cfg.DataDir, "data"), mvcc.Options{CacheBytes: cfg.CacheBytes, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	h.store = store
	rtt := uint64(cfg.HeartbeatInterval / time.Millisecond)
	transport := cfg.TransportFactory
	if transport == nil {
		transport = TCPTransport{}
	}
	// Sequencers learn when the Raft log store syncs (shard.SyncGate).
	h.cfg.Sequencer.Gate = shard.NewSyncGate()
	if err := watchLogSyncs(filepath.Join(cfg.DataDir, "raft"), h.cfg.Sequencer.Gate); err != nil {
		store.Close()
		return nil, fmt.Errorf("placement: %w", err)
	}
	nhc := config.NodeHostConfig{
		DeploymentID:      deploymentID(cfg.ClusterToken),
		NodeHostDir:       filepath.Join(cfg.DataDir, "raft"),
		RTTMillisecond:    rtt,
		RaftAddress:       cfg.RaftAddress,
		ListenAddress:     cfg.ListenAddress,
		RaftEventListener: h,
		Expert: config.ExpertConfig{
			LogDB:            logDBConfig(),
			TransportFactory: transport,
		},
	}
	nh, err := dragonboat.NewNodeHost(nhc)
	if err != nil {
		unwatchLogSyncs(nhc.NodeHostDir, h.cfg.Sequencer.Gate)
		store.Close()
		return nil, fmt.Errorf("placement: start raft: %w", err)
	}
	h.nh = nh
	h.meta = shard.NewMetaStateMachine(store, h.replicaID, h.lg)

	// A restart finds its groups in the Raft log store; a new member of a
	// new cluster starts those the initial cluster gives it.
	var members map[uint64]dragonboat.Target
	for _, ni := range nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{}).LogInfo {
		switch {
		case ni.ReplicaID != h.replicaID:
			continue
		case ni.ShardID == shard.MetaShardID:
			h.hasMeta = true
		default:
			h.restartShards = append(h.restartShards, ni.ShardID)
		}
	}
	restart := h.hasMeta || len(h.restartShards) > 0
	// A member of a new cluster beyond the replication factor is a
	// gateway: it joins the meta group as the others would add it
	// (Bootstrap), as a member added later would.
	h.joining = (cfg.Join || h.initialGateway()) && !restart
	// A member that joined started its replicas as non-voting ones, and
	// must restart them so: replaying its log promotes them again.
	joined := filepath.Join(cfg.DataDir, "joined")
	if h.joining {
		if err := os.WriteFile(joined, nil, 0o644); err != nil {
			h.Close()
			return nil, fmt.Errorf("placement: %w", err)
		}
	}
	if _, err := os.Stat(joined); err == nil {
		h.nonVoting = true
	}
	switch {
	case h.joining:
		h.hasMeta = true
	case !restart:
		if voters := h.initialVoters(); voters[h.replicaID] != "" {
			h.hasMeta, members = true, voters
		}
	}
	if h.hasMeta {
		create := func(uint64, uint64) sm.IOnDiskStateMachine { return h.meta }
		if err := nh.StartOnDiskReplica(members, h.joining, create, h.raftConfig(shard.MetaShardID)); err != nil {
			h.Close()
			return nil, fmt.Errorf("placement: start meta group: %w", err)
		}
	}
	return h, nil
}

// logDBMemtableBytes is the size of a memtable of the Raft logs' store.
const logDBMemtableBytes = 32 << 20

// logDBConfig is the configuration of the Raft logs' store: one Pebble
// for every group. (Dragonboat's default is 16, each with its own
// write-ahead log: with many shards, each step worker then synced its own
// log, and fsyncs took a quarter of a node's CPU. In one Pebble, concurrent
// saves share a sync.) Dragonboat records the count in the data directory
// and refuses to open it with another.
//
// Its memtables are 32 MiB, not 4: an entry lives from its append to the
// log compaction after the next snapshot, and in a larger memtable more of
// them are deleted before they are flushed (see raftConfig).
//
// Three of them. Dragonboat calls the LogDB busy, and the node refuses
// proposals with ErrSystemBusy, while its memtables take 95% of their size
// times their number. While a full memtable flushes, the next one is
// already allocated. With two, every switch under load therefore refused
// writes until the flush ended: every 5 s at 18,000 puts/s. The writes were
// retried, and the longest put took 60-250 ms (43-76 ms with three). With
// three, only a flush that falls a whole memtable behind stops proposals.
// Each memtable more costs disk: Pebble keeps write-ahead logs for reuse,
// and under a steady write load the directory holds five logs of 32 MiB
// (about 180 MiB in all, where it held 30 with 4 MiB memtables).
func logDBConfig() config.LogDBConfig {
	c := config.GetTinyMemLogDBConfig()
	c.Shards = 1
	c.KVWriteBufferSize = logDBMemtableBytes
	c.KVMaxWriteBufferNumber = 3
	return c
}

// initialVoters returns the replicas of a new cluster's groups: the
// ReplicationFactor members of the initial cluster with the lowest ids
// (every member computes the same, whatever the order of its flag), with
// their Raft addresses.
func (h *Host) initialVoters() map[uint64]dragonboat.Target {
	members := slices.Clone(h.cfg.InitialCluster)
	slices.SortFunc(members, func(a, b *basaltpb.Member) int { return cmp.Compare(a.Id, b.Id) })
	voters := make(map[uint64]dragonboat.Target)
	for _, m := range members {
		if len(voters) == ReplicationFactor {
			break
		}
		if addr, err := RaftAddress(m); err == nil {
			voters[m.Id] = addr
		}
	}
	return voters
}

// initialGateway tells whether this node is a member of the initial
// cluster that initialVoters leaves out.
func (h *Host) initialGateway() bool {
	in := slices.ContainsFunc(h.cfg.InitialCluster, func(m *basaltpb.Member) bool { return m.Id == h.replicaID })
	_, voter := h.initialVoters()[h.replicaID]
	return in && !voter
}

// RaftAddress is the host:port of a member's first peer URL, where its Raft
// transport listens.
func RaftAddress(m *basaltpb.Member) (string, error) {
	if len(m.PeerUrls) == 0 {
		return "", fmt.Errorf("placement: member %x has no peer URL", m.Id)
	}
	u, err := url.Parse(m.PeerUrls[0])
	if err == nil && u.Scheme != "http" {
		err = errors.New("only http:// is supported")
	}
	if err == nil {
		_, _, err = net.SplitHostPort(u.Host)
	}
	if err != nil {
		return "", fmt.Errorf("placement: member %x: bad peer URL %q: %v", m.Id, m.PeerUrls[0], err)
	}
	return u.Host, nil
}

// HasMeta tells whether this node holds a replica of the meta group.
func (h *Host) HasMeta() bool { return h.hasMeta }

func (h *Host) raftConfig(shardID uint64) config.Config {
	return config.Config{
		ShardID:            shardID,
		ReplicaID:          h.replicaID,
		HeartbeatRTT:       1,
		ElectionRTT:        uint64(h.cfg.ElectionTimeout / h.cfg.HeartbeatInterval),
		CheckQuorum:        true,
		PreVote:            true,
		SnapshotEntries:    h.cfg.SnapshotCount,
		CompactionOverhead: h.cfg.SnapshotCount / 2,
		// After each snapshot dragonboat deletes the log's old entries and,
		// unless this is set, compacts their range at once: that flushed
		// the memtable and rewrote entries that were about to die, 1.3 µs
		// of CPU per put on one node. Pebble's own compactions reclaim the
		// space of entries that were flushed before they were deleted.
		DisableAutoCompactions: true,
		// A joining member starts as a non-voting replica; it is promoted
		// once started (PromoteSelf, or MemberPromote for a learner).
		IsNonVoting: h.nonVoting,
	}
}

// requestSnapshot asks dragonboat for a snapshot of this node's replica
// of a data shard, and a log compaction that keeps the last keep entries
// (see shard.DataStateMachine.SnapshotEvery). It does not wait: the
// snapshot of an on-disk state machine syncs the store and records the
// applied index. It reports whether dragonboat took the request; it takes
// one at a time per replica.
func (h *Host) requestSnapshot(shardID, keep uint64) bool {
	opt := dragonboat.SnapshotOption{OverrideCompactionOverhead: true, CompactionOverhead: keep}
	if _, err := h.nh.RequestSnapshot(shardID, opt, time.Minute); err != nil {
		return false
	}
	h.snapshots.Add(1)
	return true
}

// SnapshotsRequested returns how many snapshots of data shards this node
// asked for after a count of writes, and dragonboat accepted.
func (h *Host) SnapshotsRequested() uint64 { return h.snapshots.Load() }

// LogRange returns the first and last index of the entries of a group's
// Raft log that this node keeps.
func (h *Host) LogRange(shardID uint64) (first, last uint64, err error) {
	lr, err := h.nh.GetLogReader(shardID)
	if err != nil {
		return 0, 0, err
	}
	first, last = lr.GetRange()
	return first, last, nil
}

// deploymentID turns the cluster token into dragonboat's deployment id, so
// that nodes of different clusters ignore each other's messages.
func deploymentID(token string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(token))
	return h.Sum64()
}

// Store returns the node's store.
func (h *Host) Store() *mvcc.Store { return h.store }

// NodeHost returns the dragonboat NodeHost.
func (h *Host) NodeHost() *dragonboat.NodeHost { return h.nh }

// ReplicaID returns this node's replica id.
func (h *Host) ReplicaID() uint64 { return h.replicaID }

// Meta returns the meta group's state machine.
func (h *Host) Meta() *shard.MetaStateMachine { return h.meta }

// Bootstrap waits for the meta group's leader and, on a new cluster, records
// the initial members and the first data shard's descriptor (every initial
// voter does it; the proposals are the same).
func (h *Host) Bootstrap(ctx context.Context) error {
	if !h.hasMeta {
		return errors.New("placement: this node holds no replica of the meta group")
	}
	if err := h.WaitLeader(ctx, shard.MetaShardID); err != nil {
		return err
	}
	state, err := h.MetaGroup().ReadState(ctx)
	if err != nil {
		return err
	}
	if len(state.Shards) > 0 || h.joining {
		return nil
	}
	for _, m := range h.cfg.InitialCluster {
		cmd := &basaltpb.MetaCommand{Command: &basaltpb.MetaCommand_PutMember{PutMember: &basaltpb.PutMember{Member: m}}}
		if err := h.MetaGroup().Propose(ctx, cmd); err != nil {
			return err
		}
	}
	d := &basaltpb.ShardDescriptor{
		ShardId:  FirstDataShardID,
		Replicas: make(map[uint64]string),
		Epoch:    1,
	}
	for id, addr := range h.initialVoters() {
		d.Replicas[id] = addr
	}
	return h.MetaGroup().Propose(ctx, &basaltpb.MetaCommand{Command: &basaltpb.MetaCommand_PutShard{PutShard: &basaltpb.PutShard{Shard: d}}})
}

// AddInitialGateways adds the members of a new cluster beyond its voters,
// its gateways, to the meta group as non-voting replicas: they wait for
// it. The meta group's leader calls it whenever it takes the lead, if it
// is one of the initial voters (the leader alone: Raft takes one
// membership change at a time and drops the others). Members that are
// replicas already, and members removed since, are left alone.
func (h *Host) AddInitialGateways(ctx context.Context) error {
	voters := h.initialVoters()
	if _, voter := voters[h.replicaID]; !voter {
		return nil
	}
	state, err := h.MetaGroup().ReadState(ctx)
	if err != nil {
		return err
	}
	for _, m := range h.cfg.InitialCluster {
		addr, err := RaftAddress(m)
		if _, voter := voters[m.Id]; voter || err != nil || findMember(state, m.Id) == nil {
			continue
		}
		if err := h.addGateway(ctx, m.Id, addr); err != nil {
			return err
		}
	}
	return nil
}

// addGateway adds a gateway to the meta group as a non-voting replica,
// unless it is a replica already.
func (h *Host) addGateway(ctx context.Context, id uint64, addr string) error {
	for {
		membership, err := h.nh.SyncGetShardMembership(ctx, shard.MetaShardID)
		if err != nil {
			return err
		}
		_, nonVoting := membership.NonVotings[id]
		if _, voting := membership.Nodes[id]; voting || nonVoting {
			return nil
		}
		err = h.changeGroups(ctx, []uint64{shard.MetaShardID}, func(ctx context.Context, group uint64) error {
			return h.nh.SyncRequestAddNonVoting(ctx, group, id, addr, membership.ConfigChangeID)
		})
		if !errors.Is(err, dragonboat.ErrRejected) {
			return err
		}
		// The membership changed meanwhile (another voter bootstraps too):
		// look again.
	}
}

// StartDataShards starts this node's replicas of the data shards the meta
// group describes (and of shards a split created that the meta group does
// not list yet), and their sequencers.
func (h *Host) StartDataShards(ctx context.Context, tso shard.RevisionAllocator, leases mvcc.LeaseChecker) error {
	h.tso, h.leases = tso, leases
	state, err := h.MetaGroup().ReadState(ctx)
	if err != nil {
		return err
	}
	descs := state.Shards
	unrecorded := map[uint64]uint64{} // child → parent
	for _, id := range h.restartShards {
		if slices.ContainsFunc(descs, func(d *basaltpb.ShardDescriptor) bool { return d.ShardId == id }) {
			continue
		}
		// Created by a split that the meta group did not record (the node
		// failed in between): its span is in the store, written by the
		// parent's apply; the parent's descriptor still holds it.
		start, end, ok, err := h.store.SpanOf(id)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(state.Shards, func(d *basaltpb.ShardDescriptor) bool {
			return bytes.Compare(d.Start, start) < 0 && (len(d.End) == 0 || bytes.Compare(start, d.End) < 0)
		})
		if !ok || i < 0 {
			continue
		}
		parent := state.Shards[i]
		descs = append(descs, &basaltpb.ShardDescriptor{ShardId: id, Start: start, End: end, Replicas: parent.Replicas, Epoch: 1})
		unrecorded[id] = parent.ShardId
	}
	for _, d := range descs {
		restart := slices.Contains(h.restartShards, d.ShardId)
		if _, ok := d.Replicas[h.replicaID]; !ok && !restart {
			continue
		}
		// A restart finds the replica's members in its Raft log; a member
		// joining a running cluster is added by the group.
		var members map[uint64]string
		if !restart && !h.joining {
			members = d.Replicas
		}
		err := h.startShard(ctx, d, members, h.joining && !restart)
		if errors.Is(err, dragonboat.ErrShardAlreadyExist) {
			continue // the parent's replayed split already started it
		}
		if err != nil {
			return err
		}
		if parent, ok := unrecorded[d.ShardId]; ok {
			if err := h.RecordSplit(ctx, parent, d); err != nil {
				return err
			}
		}
	}
	if h.IsGateway() {
		h.bg.Add(1)
		go h.keepReplicas()
	}
	return nil
}

// keepReplicasInterval is how often a gateway looks whether it was made a
// replica of the data shards.
const keepReplicasInterval = 200 * time.Millisecond

// keepReplicas runs on a gateway until it holds a replica of every data
// shard: once the shards' descriptors list it (it replaces a removed
// member, see replace), it starts its replicas, which join their groups
// and catch up from the others.
func (h *Host) keepReplicas() {
	defer h.bg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-h.closec
		cancel()
	}()
	t := time.NewTicker(keepReplicasInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		descs, _ := h.meta.Shards()
		missing := 0
		for _, d := range descs {
			if _, listed := d.Replicas[h.replicaID]; !listed {
				missing++
				continue
			}
			if _, err := h.Replica(d.ShardId); err == nil {
				continue
			}
			missing++
			err := h.startShard(ctx, d, nil, true)
			if err != nil && !errors.Is(err, dragonboat.ErrShardAlreadyExist) && ctx.Err() == nil {
				h.lg.Warn("start-replacing-replica", zap.Uint64("shard-id", d.ShardId), zap.Error(err))
			}
		}
		if missing == 0 && len(descs) > 0 {
			return
		}
	}
}

// startShard starts this node's replica of a data shard and its sequencer:
// a new group's replica with its initial members, or (members nil) one
// that restarts from its Raft log or, with join, waits to be added.
func (h *Host) startShard(ctx context.Context, d *basaltpb.ShardDescriptor, initial map[uint64]string, join bool) error {
	// Apply does not check leases (they live in the meta group); the
	// sequencer does, before it takes a revision.
	dsm := shard.NewDataStateMachine(h.store, d.ShardId, h.replicaID, d.Start, d.End, mvcc.AllowAllLeases, h.lg)
	dsm.OnSplit(h.splitApplied)
	dsm.SnapshotEvery(h.cfg.SnapshotCount, func(keep uint64) bool { return h.requestSnapshot(d.ShardId, keep) })
	var members map[uint64]dragonboat.Target
	if len(initial) > 0 {
		members = make(map[uint64]dragonboat.Target, len(initial))
		for id, addr := range initial {
			members[id] = addr
		}
	}
	create := func(uint64, uint64) sm.IOnDiskStateMachine { return dsm }
	if err := h.nh.StartOnDiskReplica(members, join, create, h.raftConfig(d.ShardId)); err != nil {
		return fmt.Errorf("placement: start shard %d: %w", d.ShardId, err)
	}
	if err := h.WaitLeader(ctx, d.ShardId); err != nil {
		return err
	}
	rep, err := shard.NewReplica(ctx, h.nh, dsm, h.tso, h.leases, h.cfg.Sequencer, h.lg)
	if err != nil {
		return err
	}
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		rep.Stop()
		return dragonboat.ErrClosed
	}
	h.dataSMs[d.ShardId] = dsm
	h.replicas[d.ShardId] = rep
	if info, ok := h.leaders[d.ShardId]; ok {
		rep.SetLeader(info.LeaderID, info.Term)
	}
	started := slices.Clone(h.started)
	h.mu.Unlock()
	for _, f := range started {
		f(rep)
	}
	return nil
}

// WatchReplicas returns this node's data shard replicas and registers f,
// called with every replica started from then on (shards created by
// splits): each replica is either returned or passed to f, once.
func (h *Host) WatchReplicas(f func(*shard.Replica)) []*shard.Replica {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.started = append(h.started, f)
	out := make([]*shard.Replica, 0, len(h.replicas))
	for _, r := range h.replicas {
		out = append(out, r)
	}
	return out
}

// splitApplied starts this node's replica of a shard a split created (the
// parent's apply calls it) and makes sure the meta group records the split,
// in case the node that split the shard failed before it did.
func (h *Host) splitApplied(sp shard.Split) {
	if _, ok := sp.Child.Replicas[h.replicaID]; !ok {
		return
	}
	// A voter starts the new group with the others; a non-voting replica
	// waits until the splitter adds it.
	initial, join := sp.Voters, false
	if _, voter := sp.Voters[h.replicaID]; !voter {
		initial, join = nil, true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return
	}
	h.bg.Add(1)
	go func() {
		defer h.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		go func() {
			select {
			case <-h.closec:
				cancel()
			case <-ctx.Done():
			}
		}()
		err := h.startShard(ctx, sp.Child, initial, join)
		if errors.Is(err, dragonboat.ErrShardAlreadyExist) {
			err = nil // applied again after a restart
		}
		if err == nil {
			err = h.RecordSplit(ctx, sp.ParentID, sp.Child)
		}
		if err != nil && !errors.Is(err, dragonboat.ErrClosed) {
			h.lg.Warn("start-split-shard", zap.Uint64("shard-id", sp.Child.ShardId), zap.Error(err))
		}
	}()
}

// RecordSplit records in the meta group that parentID split off child
// (again: a split recorded before changes nothing).
func (h *Host) RecordSplit(ctx context.Context, parentID uint64, child *basaltpb.ShardDescriptor) error {
	return h.MetaGroup().Propose(ctx, &basaltpb.MetaCommand{Command: &basaltpb.MetaCommand_RecordSplit{RecordSplit: &basaltpb.RecordSplit{
		ParentId: parentID, Child: child,
	}}})
}

// AllocShardID returns a shard id that was never used, from the meta group.
func (h *Host) AllocShardID(ctx context.Context) (uint64, error) {
	res, err := h.MetaGroup().ProposeResult(ctx, &basaltpb.MetaCommand{Command: &basaltpb.MetaCommand_AllocShardId{AllocShardId: &basaltpb.AllocShardID{}}})
	if err != nil {
		return 0, err
	}
	return res.ShardId, nil
}

// Replica returns this node's replica of a data shard.
func (h *Host) Replica(shardID uint64) (*shard.Replica, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	rep, ok := h.replicas[shardID]
	if !ok {
		return nil, fmt.Errorf("placement: no replica of shard %d on this node: %w", shardID, dragonboat.ErrShardNotFound)
	}
	return rep, nil
}

// ReplicaCount returns how many data shard replicas this node holds.
func (h *Host) ReplicaCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.replicas)
}

// FirstReplica returns this node's data shard replica with the lowest shard
// id, or nil on a member that holds none. It is the replica whose term a
// member reports (response headers, Status), so the choice must not change
// from call to call.
func (h *Host) FirstReplica() *shard.Replica {
	h.mu.Lock()
	defer h.mu.Unlock()
	var first *shard.Replica
	for id, r := range h.replicas {
		if first == nil || id < first.ShardID() {
			first = r
		}
	}
	return first
}

// Replicas returns this node's data shard replicas.
func (h *Host) Replicas() []*shard.Replica {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*shard.Replica, 0, len(h.replicas))
	for _, r := range h.replicas {
		out = append(out, r)
	}
	return out
}

// LeaderUpdated records leadership changes; dragonboat calls it.
func (h *Host) LeaderUpdated(info raftio.LeaderInfo) {
	h.mu.Lock()
	h.leaders[info.ShardID] = info
	rep := h.replicas[info.ShardID]
	watchers := h.watchers
	h.mu.Unlock()
	if rep != nil {
		rep.SetLeader(info.LeaderID, info.Term)
	}
	for _, w := range watchers {
		w(info)
	}
}

// OnLeaderChange registers f to be called (on a Raft goroutine: it must not
// block) at every leadership change of any group on this node.
func (h *Host) OnLeaderChange(f func(raftio.LeaderInfo)) {
	h.mu.Lock()
	h.watchers = append(h.watchers, f)
	h.mu.Unlock()
}

// Leader returns the leader (a member id, 0 when unknown) and term of a
// group on this node.
func (h *Host) Leader(shardID uint64) (leader, term uint64) {
	leader, term, ok, err := h.nh.GetLeaderID(shardID)
	if err != nil || !ok {
		return 0, term
	}
	return leader, term
}

// LastIndex returns the index of the newest entry of the group's Raft log
// on this node's disk (0 when it holds no replica of the group). Unlike a
// state machine's applied index it counts every entry: the empty entries
// of elections and membership changes too. It can pass the committed index
// by the entries still being replicated; dragonboat does not tell the
// committed index itself.
func (h *Host) LastIndex(shardID uint64) uint64 {
	lr, err := h.nh.GetLogReader(shardID)
	if err != nil {
		return 0
	}
	_, last := lr.GetRange()
	return last
}

// TransferLeader asks the group's leader (this node) to hand leadership to
// target.
func (h *Host) TransferLeader(shardID, target uint64) error {
	return h.nh.RequestLeaderTransfer(shardID, target)
}

// WaitLeader waits until the shard has a leader.
func (h *Host) WaitLeader(ctx context.Context, shardID uint64) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if _, _, ok, err := h.nh.GetLeaderID(shardID); err == nil && ok {
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("placement: shard %d has no leader: %w", shardID, ctx.Err())
		}
	}
}

// RaftStatus reports what etcd's Maintenance.Status shows of Raft for the
// group: its leader replica, term and this replica's applied index.
type RaftStatus struct {
	LeaderID  uint64
	Term      uint64
	Applied   uint64
	IsLearner bool
}

// Status returns the Raft status of a group on this node.
func (h *Host) Status(shardID uint64) RaftStatus {
	leader, term, _, _ := h.nh.GetLeaderID(shardID)
	st := RaftStatus{LeaderID: leader, Term: term}
	if shardID == shard.MetaShardID {
		return st
	}
	if rep, err := h.Replica(shardID); err == nil {
		st.Applied = rep.Shard().AppliedIndex()
	}
	return st
}

// Close stops the sequencers, the NodeHost and the store.
func (h *Host) Close() {
	h.mu.Lock()
	if !h.closing {
		h.closing = true
		close(h.closec)
	}
	h.mu.Unlock()
	h.bg.Wait()
	for _, r := range h.Replicas() {
		r.Stop()
	}
	if h.nh != nil {
		h.nh.Close()
	}
	unwatchLogSyncs(filepath.Join(h.cfg.DataDir, "raft"), h.cfg.Sequencer.Gate)
	if h.store != nil {
		if err := h.store.Close(); err != nil {
			h.lg.Warn("close-store", zap.Error(err))
		}
	}
}

// LogSyncs returns how many syncs of its Raft log store the host's
// sequencers have seen end, and how many the store asked for and skipped
// because a commit index alone needed them (none of either where the
// store's syncs are not watched: see logsync.go).
func (h *Host) LogSyncs() (ended, skipped uint64) { return h.cfg.Sequencer.Gate.Syncs() }

// MetaGroup returns the meta group as the TSO and coordinator use it.
func (h *Host) MetaGroup() MetaGroup { return MetaGroup{h: h} }

// MetaGroup proposes to and reads the meta group through this node.
type MetaGroup struct{ h *Host }

// ReadState reads the meta state linearizably: a ReadIndex on the group,
// then a read of this replica, which has applied everything committed
// before. It retries while the group has no leader, or a new leader cannot
// serve reads yet.
func (m MetaGroup) ReadState(ctx context.Context) (*basaltpb.MetaState, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	if err := retryDropped(ctx, func() error { return shard.ReadIndex(ctx, m.h.nh, shard.MetaShardID) }); err != nil {
		return nil, err
	}
	v, err := m.h.nh.StaleRead(shard.MetaShardID, nil)
	if err != nil {
		return nil, err
	}
	return v.(*basaltpb.MetaState), nil
}

// retryDropped runs f until it succeeds, fails otherwise than by a dropped
// request (no leader yet: nothing was done), or ctx ends.
func retryDropped(ctx context.Context, f func() error) error {
	backoff := time.Millisecond
	for {
		err := f()
		if !errors.Is(err, dragonboat.ErrShardNotReady) {
			return err
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return err
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// ConfirmLeader returns once a ReadIndex on the meta group succeeded while
// this node led it in one term throughout: it led the group at some point
// after the call began. (On a follower a ReadIndex succeeds too, through
// the leader; that confirms nothing.)
func (m MetaGroup) ConfirmLeader(ctx context.Context) error {
	leader, term := m.h.Leader(shard.MetaShardID)
	if leader != m.h.replicaID {
		return &shard.NotLeaderError{ShardID: shard.MetaShardID, Leader: leader}
	}
	if err := shard.ReadIndex(ctx, m.h.nh, shard.MetaShardID); err != nil {
		return err
	}
	if l, t := m.h.Leader(shard.MetaShardID); l != leader || t != term {
		return &shard.NotLeaderError{ShardID: shard.MetaShardID, Leader: l}
	}
	return nil
}

// Sync returns once this node's replica of the meta group has applied
// everything committed before the call (a ReadIndex, on any replica).
func (m MetaGroup) Sync(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	return retryDropped(ctx, func() error { return shard.ReadIndex(ctx, m.h.nh, shard.MetaShardID) })
}

// Propose proposes a meta command and waits until it is applied.
func (m MetaGroup) Propose(ctx context.Context, cmd *basaltpb.MetaCommand) error {
	_, err := m.ProposeResult(ctx, cmd)
	return err
}

// ProposeResult proposes a meta command, waits until it is applied and
// returns its result.
func (m MetaGroup) ProposeResult(ctx context.Context, cmd *basaltpb.MetaCommand) (*basaltpb.MetaResult, error) {
	data, err := shard.EncodeMetaCommand(cmd)
	if err != nil {
		return nil, err
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	var res sm.Result
	err = retryDropped(ctx, func() (err error) {
		res, err = m.h.nh.SyncPropose(ctx, m.h.nh.GetNoOPSession(shard.MetaShardID), data)
		return err
	})
	if err != nil {
		return nil, err
	}
	var out basaltpb.MetaResult
	if err := proto.Unmarshal(res.Data, &out); err != nil {
		return nil, fmt.Errorf("placement: undecodable meta result: %w", err)
	}
	return &out, shard.CodeError(out.Error)
}

func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, 10*time.Second)
}
