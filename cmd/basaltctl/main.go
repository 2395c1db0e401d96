// Command basaltctl is Basalt's admin tool for what etcdctl does not cover:
// shards, restoring snapshots, and benchmarks.
//
//	basaltctl shards [--endpoint host:port]   list the shards
//	basaltctl shard split KEY                 split the shard that holds KEY at KEY
//	basaltctl snapshot restore FILE --data-dir DIR
//	                                          a new member's data from `etcdctl snapshot save`
//	basaltctl bench WORKLOAD [flags]          run against --endpoints
//	basaltctl bench compare WORKLOAD [flags]  Basalt and etcd 3.7.3 side by side
//	basaltctl bench merge RESULT.json...      merge results of several client machines
//
// Workloads: put, range, txn-put, txn-mixed, watch, lease-keepalive, k8s.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/basaltdb/basalt/bench"
	"github.com/basaltdb/basalt/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "basaltctl:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  basaltctl shards [--endpoint host:port]    list the shards: span, size, keys, leader, replicas
  basaltctl shard split KEY [--endpoint ..]  split the shard that holds KEY at KEY
  basaltctl snapshot restore FILE --data-dir DIR
                                             make a new member's data directory from a snapshot
                                             that etcdctl snapshot save took
  basaltctl bench WORKLOAD [flags]           run a workload against --endpoints
  basaltctl bench compare WORKLOAD [flags]   run it against Basalt and etcd 3.7.3, side by side
  basaltctl bench merge RESULT.json...       merge results measured from several machines
  basaltctl version

workloads: ` + "put, range, txn-put, txn-mixed, watch, lease-keepalive, k8s" + `
flags: basaltctl bench WORKLOAD -h`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "version", "--version":
		fmt.Fprintf(stdout, "basaltctl version: %s\n", version.Basalt)
		return nil
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	case "shards":
		return runShards(ctx, args[1:], stdout, stderr)
	case "shard":
		return runShard(ctx, args[1:], stdout, stderr)
	case "snapshot":
		return runSnapshot(ctx, args[1:], stdout, stderr)
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "merge":
		return runMerge(args[1:], stdout)
	case "compare":
		if len(args) < 2 {
			return errors.New("basaltctl bench compare WORKLOAD [flags]")
		}
		return runCompare(ctx, args[1], args[2:], stdout, stderr)
	}
	workload, args := args[0], args[1:]
	fs, f := benchFlags(workload, stderr)
	jsonOut := fs.String("json", "", "write the result as JSON to this file (- for stdout)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o, wc, err := f.options(fs)
	if err != nil {
		return err
	}
	w, err := bench.NewWorkload(workload, wc)
	if err != nil {
		return err
	}
	res, err := bench.Run(ctx, o, w)
	if err != nil {
		return err
	}
	res.Target = strings.Join(o.Endpoints, ",")
	return output(res, *jsonOut, stdout, func(w io.Writer) { bench.PrintResult(w, res) })
}

func runCompare(ctx context.Context, workload string, args []string, stdout, stderr io.Writer) error {
	fs, f := benchFlags(workload, stderr)
	rounds := fs.Int("rounds", 1, "alternate Basalt and etcd this many times each")
	nodes := fs.Int("nodes", 1, "members of each local cluster (Basalt and etcd alike)")
	shards := fs.Int("shards", 1, "split the local Basalt's key space into this many shards first")
	resultsDir := fs.String("results-dir", "bench/results", "directory for the report (JSON and an HTML page with charts)")
	etcdEndpoints := fs.String("etcd-endpoints", "", "a running etcd cluster to compare with (default: start etcd 3.7.3 on loopback)")
	basaltBin := fs.String("basalt-bin", "", "basalt binary for the local node (default: build ./cmd/basalt)")
	etcdBin := fs.String("etcd-bin", "", "etcd binary for the local node (default: go.mod's tool, go tool server)")
	jsonOut := fs.String("json", "", "also write the comparison as JSON to this file (- for stdout)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o, wc, err := f.options(fs)
	if err != nil && !errors.Is(err, errNoEndpoints) {
		return err
	}
	if *shards < 1 || *shards > 64 {
		return fmt.Errorf("--shards must be between 1 and 64, not %d", *shards)
	}
	co := bench.CompareOptions{
		Options: o, Workload: workload, Config: wc, Rounds: *rounds, ResultsDir: *resultsDir,
		BasaltBin: *basaltBin, EtcdBin: *etcdBin, Nodes: *nodes, Shards: *shards, Log: stderr,
	}
	if explicit(fs, "endpoints") {
		co.BasaltEndpoints = o.Endpoints
	}
	if *etcdEndpoints != "" {
		co.EtcdEndpoints = splitList(*etcdEndpoints)
	}
	cmp, err := bench.Compare(ctx, co)
	if err != nil {
		return err
	}
	return output(cmp, *jsonOut, stdout, func(w io.Writer) { bench.PrintComparison(w, cmp) })
}

func runMerge(paths []string, stdout io.Writer) error {
	if len(paths) == 0 {
		return errors.New("basaltctl bench merge RESULT.json...")
	}
	var rs []*bench.Result
	for _, p := range paths {
		r, err := bench.ReadResult(p)
		if err != nil {
			return err
		}
		rs = append(rs, r)
	}
	m, err := bench.Merge(rs)
	if err != nil {
		return err
	}
	bench.PrintResult(stdout, m)
	return nil
}

// output prints v as text, and as JSON to path when asked.
func output(v any, path string, stdout io.Writer, text func(io.Writer)) error {
	if path == "-" {
		return bench.WriteJSON(stdout, v)
	}
	text(stdout)
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := bench.WriteJSON(f, v); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

var errNoEndpoints = errors.New("no endpoints")

// flagValues holds the parsed common flags.
type flagValues struct {
	endpoints, progress   *string
	clients, conns, total *int
	duration, warmup      *time.Duration
	rate                  *float64
	seed                  *uint64
	wc                    bench.WorkloadConfig
}

func benchFlags(workload string, stderr io.Writer) (*flag.FlagSet, *flagValues) {
	fs := flag.NewFlagSet("bench "+workload, flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &flagValues{wc: bench.DefaultWorkloadConfig()}
	f.endpoints = fs.String("endpoints", "http://127.0.0.1:2379", "comma-separated client URLs of the cluster under test")
	f.clients = fs.Int("clients", 1, "concurrent clients")
	f.conns = fs.Int("conns", 1, "gRPC connections shared by the clients")
	f.total = fs.Int("total", 0, "requests to send (0: run for --duration)")
	f.duration = fs.Duration("duration", 10*time.Second, "how long to run when --total is 0")
	f.warmup = fs.Duration("warmup", time.Second, "unmeasured run before the measured one")
	f.rate = fs.Float64("rate", 0, "requests per second across all clients (0: unlimited)")
	f.progress = fs.String("progress", "auto", "progress on stderr: auto (a bar on a terminal), on, off")
	f.seed = fs.Uint64("seed", 1, "seed of key choices")
	wc := &f.wc
	fs.IntVar(&wc.KeySize, "key-size", wc.KeySize, "key size in bytes")
	fs.IntVar(&wc.ValueSize, "val-size", wc.ValueSize, "value size in bytes")
	fs.IntVar(&wc.KeySpace, "key-space-size", wc.KeySpace, "number of distinct keys written")
	fs.BoolVar(&wc.SequentialKeys, "sequential-keys", false, "write keys in order instead of at random")
	fs.StringVar(&wc.Consistency, "consistency", wc.Consistency, "range: l (linearizable) or s (serializable)")
	fs.Int64Var(&wc.Limit, "limit", 0, "range: maximum keys returned")
	fs.BoolVar(&wc.Prefix, "prefix", false, "range: read a prefix holding --prefix-keys keys")
	fs.IntVar(&wc.PrefixKeys, "prefix-keys", wc.PrefixKeys, "range: keys under the prefix")
	fs.BoolVar(&wc.KeysOnly, "keys-only", false, "range: keys without values")
	fs.BoolVar(&wc.CountOnly, "count-only", false, "range: only the count")
	fs.IntVar(&wc.TxnOps, "txn-ops", wc.TxnOps, "txn-put: puts per transaction")
	fs.IntVar(&wc.TxnShards, "txn-shards", 0, "txn-put: spread each transaction's puts over this many equal parts of the key space (the shards of --shards)")
	fs.Float64Var(&wc.ReadRatio, "rw-ratio", wc.ReadRatio, "txn-mixed: share of reads, 0 to 1")
	fs.IntVar(&wc.Streams, "streams", wc.Streams, "watch: watch streams")
	fs.IntVar(&wc.WatchersPer, "watchers-per-stream", wc.WatchersPer, "watch: watchers per stream")
	fs.IntVar(&wc.Leases, "leases", wc.Leases, "lease-keepalive: leases kept alive")
	fs.IntVar(&wc.Objects, "objects", wc.Objects, "k8s: objects created before the run")
	fs.Int64Var(&wc.PageSize, "page-size", wc.PageSize, "k8s: list page size")
	fs.IntVar(&wc.Watchers, "watchers", wc.Watchers, "k8s: watchers of the objects")
	return fs, f
}

// options turns the parsed flags into bench options.
func (f *flagValues) options(fs *flag.FlagSet) (bench.Options, bench.WorkloadConfig, error) {
	o := bench.Options{
		Endpoints: splitList(*f.endpoints),
		Clients:   *f.clients, Conns: *f.conns, Total: *f.total, Duration: *f.duration,
		Warmup: *f.warmup, Rate: *f.rate, Seed: *f.seed,
	}
	if explicit(fs, "total") && !explicit(fs, "duration") {
		o.Duration = 0
	}
	switch *f.progress {
	case "auto":
		o.Progress = isatty.IsTerminal(os.Stderr.Fd())
	case "on":
		o.Progress = true
	case "off":
	default:
		return o, f.wc, fmt.Errorf("--progress must be auto, on or off")
	}
	if fs.NArg() > 0 {
		return o, f.wc, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if len(o.Endpoints) == 0 {
		return o, f.wc, errNoEndpoints
	}
	return o, f.wc, nil
}

func explicit(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			found = true
		}
	})
	return found
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}
