// Command basalt runs a Basalt node: a key-value store that speaks the etcd
// v3 API. With no flags it starts a single node serving clients on
// http://127.0.0.1:2379 with its data in ./default.basalt, as etcd does.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/basaltdb/basalt/internal/logging"
	"github.com/basaltdb/basalt/internal/node"
	"github.com/basaltdb/basalt/internal/version"
)

// gcPercent is the garbage collector's target (GOGC) unless the GOGC
// environment variable sets another. A node's live heap is small (tens of
// MiB: Pebble's caches are outside it), and under load it allocates
// several KiB per request, so with Go's default of 100 it collected about
// ten times a second, and marking, assists and stack scans took about 5%
// of a busy node's CPU. At 400 the heap may grow to five times the live
// data between collections.
const gcPercent = 400

// mutexProfileFraction is the sampling of the mutex profile that
// --enable-pprof turns on (runtime.SetMutexProfileFraction).
const mutexProfileFraction = 5

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "basalt:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("basalt", flag.ContinueOnError)
	var (
		name            = fs.String("name", "default", "human-readable name for this member")
		dataDir         = fs.String("data-dir", "", "path to the data directory (default ${name}.basalt)")
		listenClient    = fs.String("listen-client-urls", "http://127.0.0.1:2379", "comma-separated URLs to listen on for client traffic")
		advertiseClient = fs.String("advertise-client-urls", "", "comma-separated client URLs to advertise to the rest of the cluster (default: the listen URLs)")
		listenPeer      = fs.String("listen-peer-urls", "http://127.0.0.1:2380", "URL to listen on for peer (Raft) traffic")
		advertisePeer   = fs.String("initial-advertise-peer-urls", "", "peer URL to advertise to the rest of the cluster (default: the listen URL)")
		clusterToken    = fs.String("initial-cluster-token", "etcd-cluster", "initial cluster token")
		initialCluster  = fs.String("initial-cluster", "", "initial cluster configuration for bootstrapping: name=peer-url,... (default: this member alone)")
		clusterState    = fs.String("initial-cluster-state", "new", "initial cluster state: new or existing")
		gossipAddr      = fs.String("gossip-addr", "", "host:port of this member's memberlist gossip, TCP and UDP (default: the peer URL's host, port + 1)")
		join            = fs.String("join", "", "gossip address (host:port) of any member of a running cluster to join: this member is added and joins")
		heartbeat       = fs.Int("heartbeat-interval", 100, "time (in milliseconds) of a heartbeat interval")
		election        = fs.Int("election-timeout", 1000, "time (in milliseconds) for an election to timeout")
		maxRequestBytes = fs.Int("max-request-bytes", 1536*1024, "maximum client request size in bytes the server will accept")
		maxTxnOps       = fs.Int("max-txn-ops", 128, "maximum number of operations permitted in a transaction")
		snapshotCount   = fs.Uint64("snapshot-count", 10000, "number of committed transactions to trigger a snapshot to disk")
		splitSize       = fs.Int64("shard-split-size", 0, "split a shard at its middle key when its data on disk passes this many bytes (0: only basaltctl shard split splits)")
		splitInterval   = fs.Duration("shard-split-check-interval", 10*time.Second, "how often shard sizes are checked against --shard-split-size")
		logLevel        = fs.String("log-level", "info", "log level: debug, info, warn, error")
		enablePprof     = fs.Bool("enable-pprof", false, "serve runtime profiling data over HTTP at /debug/pprof/")
		progressNotify  = fs.Duration("watch-progress-notify-interval", 10*time.Minute, "duration of periodic watch progress notifications")
		leaseCheckpoint = fs.Duration("lease-checkpoint-interval", 5*time.Second, "how often the remaining TTLs of leases are recorded, so that they survive restarts and leader changes")
		showVersion     = fs.Bool("version", false, "print the version and exit")
	)
	// etcd 3.5's name of the flag.
	fs.DurationVar(progressNotify, "experimental-watch-progress-notify-interval", 10*time.Minute, "deprecated name of --watch-progress-notify-interval")
	fs.DurationVar(leaseCheckpoint, "experimental-lease-checkpoint-interval", 5*time.Second, "etcd's name of --lease-checkpoint-interval")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		fmt.Printf("basalt version: %s\netcd API version: %s\n", version.Basalt, version.Etcd)
		return nil
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	lg, err := logging.New(*logLevel)
	if err != nil {
		return err
	}
	defer lg.Sync() //nolint:errcheck // stderr
	// Signals are caught from here on: once the start line is out, SIGINT
	// and SIGTERM stop the node cleanly, even while it starts.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	lg.Info("starting a basalt node",
		zap.String("basalt-version", version.Basalt),
		zap.String("go-version", runtime.Version()),
		zap.String("go-os", runtime.GOOS),
		zap.String("go-arch", runtime.GOARCH),
		zap.Int("max-cpu-set", runtime.GOMAXPROCS(0)),
		zap.Int("max-cpu-available", runtime.NumCPU()),
		zap.String("name", *name),
	)

	cfg := node.Config{
		Name:                *name,
		DataDir:             *dataDir,
		ListenClientURLs:    splitURLs(*listenClient),
		AdvertiseClientURLs: splitURLs(*advertiseClient),
		ListenPeerURL:       *listenPeer,
		AdvertisePeerURL:    *advertisePeer,
		ClusterToken:        *clusterToken,
		InitialCluster:      *initialCluster,
		InitialClusterState: *clusterState,
		SnapshotCount:       *snapshotCount,
		ShardSplitSize:      *splitSize,
		GossipAddr:          *gossipAddr,
		Join:                *join,
		HeartbeatInterval:   time.Duration(*heartbeat) * time.Millisecond,
		ElectionTimeout:     time.Duration(*election) * time.Millisecond,
		MaxRequestBytes:     *maxRequestBytes,
		MaxTxnOps:           *maxTxnOps,
		EnablePprof:         *enablePprof,

		WatchProgressNotifyInterval: *progressNotify,
		LeaseCheckpointInterval:     *leaseCheckpoint,
		ShardSplitCheckInterval:     *splitInterval,
		Logger:                      lg,
	}
	if *enablePprof && runtime.SetMutexProfileFraction(-1) == 0 {
		// As etcd does: /debug/pprof/mutex reports one contended unlock in
		// five, on average.
		runtime.SetMutexProfileFraction(mutexProfileFraction)
	}
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	n, err := node.Start(startCtx, cfg)
	cancel()
	if err != nil && ctx.Err() != nil {
		// Stopped while starting (Start has closed what it opened), as
		// when a member waits for the others of a new cluster.
		lg.Info("shutting-down", zap.String("signal", "received"), zap.String("while", "starting"))
		return nil
	}
	if err != nil {
		return err
	}
	tuned := make(chan struct{})
	go func() {
		defer close(tuned)
		if os.Getenv("GOMAXPROCS") == "" {
			tuneProcs(ctx, n.InFlight, lg)
		}
	}()
	<-ctx.Done()
	<-tuned
	lg.Info("shutting-down", zap.String("signal", "received"))
	n.Stop()
	lg.Info("stopped")
	return nil
}

func splitURLs(s string) []string {
	var out []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}
