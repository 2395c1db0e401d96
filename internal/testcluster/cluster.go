package testcluster

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/basaltdb/basalt/internal/node"
	"github.com/basaltdb/basalt/internal/testnode"
)

// Cluster is a cluster of in-process nodes.
type Cluster struct {
	t      testing.TB
	faults *faults
	Nodes  []*Node
}

// Node is one member of a Cluster.
type Node struct {
	*node.Node // nil while stopped
	cfg        node.Config
	// ClientURL is where clients reach the node.
	ClientURL string
	// RaftAddress is where its Raft transport is reached.
	RaftAddress string
	// ID is its member id, known once it started.
	ID uint64
}

// Option changes every node's configuration.
type Option func(*node.Config)

// WithVerboseLogs sends the nodes' logs to the test log.
func WithVerboseLogs(t testing.TB) Option {
	return func(c *node.Config) {
		c.Logger = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Named(c.Name)
	}
}

// WithFaults carries Raft traffic over an in-memory transport that Cut can
// sever, instead of dragonboat's TCP transport. (A node restarted on it may
// not hear from the leader again: dragonboat keeps a stale in-memory
// connection. Tests that restart nodes use TCP.)
func WithFaults() Option {
	// Start gives the transport the cluster's fault knob.
	return func(c *node.Config) { c.TransportFactory = transportFactory{} }
}

// WithSnapshotCount sets --snapshot-count: applied writes between Raft
// snapshots (a small count makes a lagging node catch up from a snapshot).
func WithSnapshotCount(n uint64) Option { return func(c *node.Config) { c.SnapshotCount = n } }

// WithLeaseCheckpointInterval sets how often remaining lease TTLs are
// recorded.
func WithLeaseCheckpointInterval(d time.Duration) Option {
	return func(c *node.Config) { c.LeaseCheckpointInterval = d }
}

// WithShardSplitSize makes shards split by themselves past size bytes,
// checked every interval.
func WithShardSplitSize(size int64, interval time.Duration) Option {
	return func(c *node.Config) { c.ShardSplitSize, c.ShardSplitCheckInterval = size, interval }
}

// WithLeaseOrphanInterval sets how often the lessor looks for keys left
// attached to leases that no longer exist.
func WithLeaseOrphanInterval(d time.Duration) Option {
	return func(c *node.Config) { c.LeaseOrphanInterval = d }
}

// WithRaftTimings sets the heartbeat interval and election timeout. The
// cluster's default (10 and 100 ms) makes failover tests quick; a test
// that asserts that no request fails under load takes longer ones, so
// that a slow fsync on a busy machine does not cost a leader its lead.
func WithRaftTimings(heartbeat, election time.Duration) Option {
	return func(c *node.Config) { c.HeartbeatInterval, c.ElectionTimeout = heartbeat, election }
}

// WithLockTTL sets the TTL of the locks of transactions across shards.
func WithLockTTL(d time.Duration) Option { return func(c *node.Config) { c.LockTTL = d } }

// Start starts a new cluster of size nodes, all at once as a new etcd
// cluster starts; the test's cleanup stops them.
func Start(t testing.TB, size int, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{t: t, faults: &faults{}}
	var initial []string
	for i := range size {
		name := fmt.Sprintf("node%d", i+1)
		peer := fmt.Sprintf("http://127.0.0.1:%d", testnode.FreePort(t))
		client := fmt.Sprintf("http://127.0.0.1:%d", testnode.FreePort(t))
		c.Nodes = append(c.Nodes, &Node{
			ClientURL:   client,
			RaftAddress: strings.TrimPrefix(peer, "http://"),
			cfg: node.Config{
				Name:              name,
				DataDir:           t.TempDir(),
				ListenClientURLs:  []string{client},
				ListenPeerURL:     peer,
				GossipAddr:        fmt.Sprintf("127.0.0.1:%d", testnode.FreePort(t)),
				HeartbeatInterval: 10 * time.Millisecond,
				ElectionTimeout:   100 * time.Millisecond,
			},
		})
		initial = append(initial, name+"="+peer)
	}
	for _, n := range c.Nodes {
		n.cfg.InitialCluster = strings.Join(initial, ",")
		for _, o := range opts {
			o(&n.cfg)
		}
		if n.cfg.TransportFactory != nil {
			n.cfg.TransportFactory = transportFactory{c.faults}
		}
	}
	t.Cleanup(c.StopAll)
	all := make([]int, size)
	for i := range all {
		all[i] = i
	}
	c.start(all...)
	return c
}

// Join starts a new node that joins the cluster by naming the gossip
// address of node via (--join); it returns its index.
func (c *Cluster) Join(via int, opts ...Option) int {
	c.t.Helper()
	return c.startNew(func(cfg *node.Config) { cfg.Join = c.Nodes[via].cfg.GossipAddr }, opts...)
}

// Add adds a member through the Cluster API (as a learner if asked) and
// starts it with --initial-cluster-state existing; it returns its index.
func (c *Cluster) Add(learner bool, opts ...Option) int {
	c.t.Helper()
	peer := fmt.Sprintf("http://127.0.0.1:%d", testnode.FreePort(c.t))
	cl := c.Client(c.t, c.running()...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	if learner {
		_, err = cl.MemberAddAsLearner(ctx, []string{peer})
	} else {
		_, err = cl.MemberAdd(ctx, []string{peer})
	}
	if err != nil {
		c.t.Fatalf("member add: %v", err)
	}
	return c.startNew(func(cfg *node.Config) {
		initial := cfg.Name + "=" + peer
		for _, n := range c.Nodes {
			initial += "," + n.cfg.Name + "=" + n.cfg.ListenPeerURL
		}
		cfg.ListenPeerURL = peer
		cfg.InitialCluster = initial
		cfg.InitialClusterState = "existing"
	}, opts...)
}

// startNew starts one more node, configured by how, and returns its index.
func (c *Cluster) startNew(how func(*node.Config), opts ...Option) int {
	c.t.Helper()
	name := fmt.Sprintf("node%d", len(c.Nodes)+1)
	client := fmt.Sprintf("http://127.0.0.1:%d", testnode.FreePort(c.t))
	cfg := node.Config{
		Name:              name,
		DataDir:           c.t.TempDir(),
		ListenClientURLs:  []string{client},
		ListenPeerURL:     fmt.Sprintf("http://127.0.0.1:%d", testnode.FreePort(c.t)),
		GossipAddr:        fmt.Sprintf("127.0.0.1:%d", testnode.FreePort(c.t)),
		ClusterToken:      c.Nodes[0].cfg.ClusterToken,
		HeartbeatInterval: c.Nodes[0].cfg.HeartbeatInterval,
		ElectionTimeout:   c.Nodes[0].cfg.ElectionTimeout,
	}
	how(&cfg)
	for _, o := range opts {
		o(&cfg)
	}
	c.Nodes = append(c.Nodes, &Node{ClientURL: client, RaftAddress: strings.TrimPrefix(cfg.ListenPeerURL, "http://"), cfg: cfg})
	c.start(len(c.Nodes) - 1)
	return len(c.Nodes) - 1
}

// running returns the indexes of the running nodes.
func (c *Cluster) running() []int {
	var idx []int
	for i, n := range c.Nodes {
		if n.Node != nil {
			idx = append(idx, i)
		}
	}
	return idx
}

// start starts nodes concurrently (a new cluster needs a quorum to start).
func (c *Cluster) start(idx ...int) {
	c.t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(c.Nodes))
	for _, i := range idx {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c.Nodes[i].Node, errs[i] = node.Start(ctx, c.Nodes[i].cfg)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			c.t.Fatalf("start %s: %v", c.Nodes[i].cfg.Name, err)
		}
	}
	for _, i := range idx {
		c.Nodes[i].ID = c.Nodes[i].MemberID()
	}
}

// Stop stops node i (as a clean shutdown).
func (c *Cluster) Stop(i int) {
	if n := c.Nodes[i]; n.Node != nil {
		n.Node.Stop()
		n.Node = nil
	}
}

// Restart starts stopped nodes again on their data, together (after
// StopAll, none can start without a quorum of the others).
func (c *Cluster) Restart(idx ...int) {
	c.t.Helper()
	c.start(idx...)
}

// Configure changes the configuration node i starts with next (a Restart
// after a Stop).
func (c *Cluster) Configure(i int, opts ...Option) {
	for _, o := range opts {
		o(&c.Nodes[i].cfg)
	}
}

// StopAll stops every running node.
func (c *Cluster) StopAll() {
	for i := range c.Nodes {
		c.Stop(i)
	}
}

// Cut cuts node i off from every other node's Raft traffic (the cluster
// must run WithFaults); its client port stays open. Heal undoes it.
func (c *Cluster) Cut(i int) {
	if c.Nodes[i].cfg.TransportFactory == nil {
		c.t.Fatal("testcluster: Cut needs a cluster started WithFaults")
	}
	c.faults.setCut(c.Nodes[i].RaftAddress, true)
}

// Heal reconnects a node that was cut off.
func (c *Cluster) Heal(i int) { c.faults.setCut(c.Nodes[i].RaftAddress, false) }

// Client returns a clientv3 client of the given nodes (all when none are
// given), closed at cleanup.
func (c *Cluster) Client(t testing.TB, idx ...int) *clientv3.Client {
	t.Helper()
	if len(idx) == 0 {
		for i := range c.Nodes {
			idx = append(idx, i)
		}
	}
	var eps []string
	for _, i := range idx {
		eps = append(eps, c.Nodes[i].ClientURL)
	}
	cl, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// Leader returns the index of the node that leads the data shard, waiting
// until one does.
func (c *Cluster) Leader() int {
	c.t.Helper()
	return c.waitNode("data shard leader", func(n *node.Node) bool { return n.IsDataLeader() })
}

// MetaLeader returns the index of the node that leads the meta group,
// waiting until one does.
func (c *Cluster) MetaLeader() int {
	c.t.Helper()
	return c.waitNode("meta group leader", func(n *node.Node) bool { return n.IsMetaLeader() })
}

// waitNode returns the index of the first running node for which ok
// holds, waiting until one does.
func (c *Cluster) waitNode(what string, ok func(*node.Node) bool) int {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for i, n := range c.Nodes {
			if n.Node != nil && ok(n.Node) {
				return i
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("no %s", what)
	return -1
}
