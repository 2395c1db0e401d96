package testnode

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/basaltdb/basalt/internal/etcdproc"
	"github.com/basaltdb/basalt/internal/node"
)

// Node is an in-process node.
type Node struct {
	*node.Node
	t   testing.TB
	cfg node.Config
	// ClientURL is the URL clients reach the node at.
	ClientURL string
}

// Option changes a node's configuration.
type Option func(*node.Config)

// WithDataDir puts the node's data in dir (to restart on the same data).
func WithDataDir(dir string) Option { return func(c *node.Config) { c.DataDir = dir } }

// WithProgressNotifyInterval sets --watch-progress-notify-interval.
func WithProgressNotifyInterval(d time.Duration) Option {
	return func(c *node.Config) { c.WatchProgressNotifyInterval = d }
}

// WithLeaseCheckpointInterval sets how often remaining lease TTLs are
// recorded.
func WithLeaseCheckpointInterval(d time.Duration) Option {
	return func(c *node.Config) { c.LeaseCheckpointInterval = d }
}

// WithVerboseLogs sends the node's logs to the test log.
func WithVerboseLogs(t testing.TB) Option {
	return func(c *node.Config) { c.Logger = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)) }
}

// Start starts a node on free loopback ports; the test's cleanup stops it.
func Start(t testing.TB, opts ...Option) *Node {
	t.Helper()
	cfg := node.Config{
		Name:              "node1",
		DataDir:           t.TempDir(),
		ListenClientURLs:  []string{fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))},
		ListenPeerURL:     fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
		GossipAddr:        fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		HeartbeatInterval: 10 * time.Millisecond,
		ElectionTimeout:   100 * time.Millisecond,
	}
	for _, o := range opts {
		o(&cfg)
	}
	n := &Node{t: t, cfg: cfg, ClientURL: cfg.ListenClientURLs[0]}
	n.start()
	t.Cleanup(n.Stop)
	return n
}

func (n *Node) start() {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nn, err := node.Start(ctx, n.cfg)
	if err != nil {
		n.t.Fatalf("start node: %v", err)
	}
	n.Node = nn
}

// Stop stops the node; stopping a stopped node does nothing.
func (n *Node) Stop() {
	if n.Node != nil {
		n.Node.Stop()
		n.Node = nil
	}
}

// Restart stops the node and starts it again on the same data and ports.
func (n *Node) Restart() {
	n.t.Helper()
	n.Stop()
	n.start()
}

// DataDir returns the node's data directory.
func (n *Node) DataDir() string { return n.cfg.DataDir }

// Client returns a clientv3 client of the node, closed at cleanup.
func (n *Node) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{n.ClientURL},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	addr, err := etcdproc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
