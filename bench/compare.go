package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/basaltdb/basalt/internal/etcdproc"
)

// CompareOptions configures a side-by-side run of one workload against
// Basalt and etcd.
type CompareOptions struct {
	Options  Options // Endpoints is ignored
	Workload string
	Config   WorkloadConfig
	// Rounds alternates the two targets this many times each.
	Rounds int
	// ResultsDir receives a directory per comparison.
	ResultsDir string
	// BasaltEndpoints and EtcdEndpoints name running clusters; when empty,
	// a local node of each is started on loopback.
	BasaltEndpoints []string
	EtcdEndpoints   []string
	// Nodes is the size of each local cluster (default 1).
	Nodes int
	// Shards splits a local Basalt's key space into this many shards
	// before the runs (SplitKeys; default 1).
	Shards int
	// BasaltBin and EtcdBin are the server binaries for local runs; empty
	// means build them from this module (basalt from ./cmd/basalt, etcd
	// from go.mod's tool line).
	BasaltBin, EtcdBin string
	// Log receives progress messages.
	Log io.Writer
}

// Comparison is the report of a side-by-side run.
type Comparison struct {
	Workload string         `json:"workload"`
	Params   map[string]any `json:"params"`
	Date     string         `json:"date"`
	Machine  string         `json:"machine"`
	Basalt   *Result        `json:"basalt"`
	Etcd     *Result        `json:"etcd"`
	// ThroughputRatio is Basalt's throughput over etcd's (higher is better);
	// the latency ratios are Basalt's over etcd's (lower is better).
	ThroughputRatio float64            `json:"throughput_ratio"`
	LatencyRatio    map[string]float64 `json:"latency_ratio"`
	// ServerCPURatio is Basalt's server CPU time per request over etcd's
	// (lower is better), when both clusters ran locally.
	ServerCPURatio float64 `json:"server_cpu_ratio,omitempty"`
	// RoundRatios is each round's throughput ratio, in the order run. On a
	// shared machine the speed drifts between rounds; their spread says
	// how far to trust ThroughputRatio.
	RoundRatios []float64 `json:"round_throughput_ratios"`
	Rounds      []Round   `json:"rounds"`
	Dir         string    `json:"-"`
}

// Round is one alternation.
type Round struct {
	Basalt *Result `json:"basalt"`
	Etcd   *Result `json:"etcd"`
}

// Compare runs the workload against Basalt and etcd, alternating, and
// writes the report.
func Compare(ctx context.Context, co CompareOptions) (*Comparison, error) {
	if co.Rounds <= 0 {
		co.Rounds = 1
	}
	if co.Log == nil {
		co.Log = io.Discard
	}
	if _, err := NewWorkload(co.Workload, co.Config); err != nil {
		return nil, err
	}
	basaltEPs, etcdEPs := co.BasaltEndpoints, co.EtcdEndpoints
	// The processes of local clusters, whose CPU time the results report.
	var basaltPIDs, etcdPIDs []int
	if len(basaltEPs) == 0 || len(etcdEPs) == 0 {
		work, err := os.MkdirTemp("", "basalt-compare")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(work)
		if len(basaltEPs) == 0 {
			ps, err := startBasalt(ctx, co.BasaltBin, work, max(co.Nodes, 1), co.Log)
			for _, p := range ps {
				defer p.stop()
				basaltEPs = append(basaltEPs, p.clientURL)
				basaltPIDs = append(basaltPIDs, p.cmd.Process.Pid)
			}
			if err != nil {
				return nil, err
			}
			if co.Shards > 1 {
				if err := splitBasalt(ctx, basaltEPs[0], co.Shards); err != nil {
					return nil, err
				}
			}
		}
		if len(etcdEPs) == 0 {
			ss, err := startEtcd(ctx, co.EtcdBin, work, max(co.Nodes, 1))
			for _, s := range ss {
				defer s.Stop()
				etcdEPs = append(etcdEPs, s.ClientURL)
				etcdPIDs = append(etcdPIDs, s.Pid())
			}
			if err != nil {
				return nil, err
			}
		}
	}

	cmp := &Comparison{Workload: co.Workload, Date: time.Now().UTC().Format(time.RFC3339),
		Machine: fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())}
	run := func(target string, eps []string, pids []int) (*Result, error) {
		o := co.Options
		o.Endpoints, o.ServerPIDs = eps, pids
		w, err := NewWorkload(co.Workload, co.Config)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(co.Log, "%s: %s ...\n", target, co.Workload)
		r, err := Run(ctx, o, w)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", target, err)
		}
		r.Target = target
		cmp.Params = r.Params
		if co.Shards > 1 {
			cmp.Params["basalt-shards"] = co.Shards
		}
		return r, nil
	}
	for i := range co.Rounds {
		var round Round
		var err error
		// Alternate who goes first, so neither always runs on a warmer
		// machine.
		if i%2 == 0 {
			if round.Basalt, err = run("basalt", basaltEPs, basaltPIDs); err == nil {
				round.Etcd, err = run("etcd", etcdEPs, etcdPIDs)
			}
		} else {
			if round.Etcd, err = run("etcd", etcdEPs, etcdPIDs); err == nil {
				round.Basalt, err = run("basalt", basaltEPs, basaltPIDs)
			}
		}
		if err != nil {
			return nil, err
		}
		cmp.Rounds = append(cmp.Rounds, round)
	}
	if err := cmp.summarize(); err != nil {
		return nil, err
	}
	if co.ResultsDir != "" {
		if err := cmp.write(co.ResultsDir); err != nil {
			return nil, err
		}
	}
	return cmp, nil
}

// summarize merges the rounds of each target and computes the ratios.
// Rounds of one target ran one after another, so their throughputs
// average rather than add.
func (c *Comparison) summarize() error {
	var bs, es []*Result
	for _, r := range c.Rounds {
		bs, es = append(bs, r.Basalt), append(es, r.Etcd)
	}
	var err error
	if c.Basalt, err = sequential(bs); err != nil {
		return err
	}
	if c.Etcd, err = sequential(es); err != nil {
		return err
	}
	c.ThroughputRatio = ratio(c.Basalt.Throughput, c.Etcd.Throughput)
	c.RoundRatios = c.RoundRatios[:0]
	for _, r := range c.Rounds {
		c.RoundRatios = append(c.RoundRatios, ratio(r.Basalt.Throughput, r.Etcd.Throughput))
	}
	b, e := c.Basalt.Latency, c.Etcd.Latency
	c.LatencyRatio = map[string]float64{
		"p50": ratio(b.P50, e.P50), "p90": ratio(b.P90, e.P90), "p99": ratio(b.P99, e.P99),
		"p99.9": ratio(b.P999, e.P999), "max": ratio(b.Max, e.Max),
	}
	if c.Basalt.ServerCPU > 0 && c.Etcd.ServerCPU > 0 {
		c.ServerCPURatio = ratio(c.Basalt.ServerCPUPerRequest(), c.Etcd.ServerCPUPerRequest())
	}
	return nil
}

// sequential merges results of runs made one after another.
func sequential(rs []*Result) (*Result, error) {
	m, err := Merge(rs)
	if err != nil {
		return nil, err
	}
	var secs, serverCPU float64
	for _, r := range rs {
		secs += r.Seconds
		serverCPU += r.ServerCPU
	}
	m.Seconds, m.ServerCPU = secs, serverCPU
	m.Throughput = float64(m.Requests-m.Errors) / secs
	if m.Histogram.Count() > 0 && rs[0].Extra["request"] != (Percentiles{}) {
		// Event workloads count deliveries, not requests.
		m.Throughput = float64(m.Histogram.Count()) / secs
	}
	m.Clients, m.Conns, m.Rate = rs[0].Clients, rs[0].Conns, rs[0].Rate
	m.Target = rs[0].Target
	return m, nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// PrintComparison writes the side-by-side table.
func PrintComparison(w io.Writer, c *Comparison) {
	fmt.Fprintf(w, "workload %s %s (%d rounds)\n", c.Workload, formatParams(c.Params), len(c.Rounds))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\tbasalt\tetcd\tbasalt/etcd\t\n")
	fmt.Fprintf(tw, "throughput/s\t%.1f\t%.1f\t%.2fx\t\n", c.Basalt.Throughput, c.Etcd.Throughput, c.ThroughputRatio)
	b, e := c.Basalt.Latency, c.Etcd.Latency
	for _, row := range []struct {
		name string
		b, e float64
	}{{"p50 ms", b.P50, e.P50}, {"p90 ms", b.P90, e.P90}, {"p99 ms", b.P99, e.P99}, {"p99.9 ms", b.P999, e.P999}, {"max ms", b.Max, e.Max}} {
		fmt.Fprintf(tw, "%s\t%.3f\t%.3f\t%.2fx\t\n", row.name, row.b, row.e, ratio(row.b, row.e))
	}
	fmt.Fprintf(tw, "errors\t%d\t%d\t\t\n", c.Basalt.Errors, c.Etcd.Errors)
	for _, row := range []struct {
		name string
		b, e float64
	}{{"server CPU µs/req", c.Basalt.ServerCPUPerRequest(), c.Etcd.ServerCPUPerRequest()},
		{"client CPU µs/req", c.Basalt.ClientCPUPerRequest(), c.Etcd.ClientCPUPerRequest()}} {
		if row.b > 0 && row.e > 0 {
			fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.2fx\t\n", row.name, row.b, row.e, ratio(row.b, row.e))
		}
	}
	tw.Flush()
	if len(c.RoundRatios) > 1 {
		fmt.Fprintf(w, "throughput ratio per round: %s\n", formatRatios(c.RoundRatios))
	}
	if c.Dir != "" {
		fmt.Fprintf(w, "report: %s\n", c.Dir)
	}
}

// formatRatios lists ratios in run order, then their median and range.
func formatRatios(rs []float64) string {
	if len(rs) == 0 {
		return ""
	}
	var sb strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&sb, "%.2fx ", r)
	}
	sorted := slices.Sorted(slices.Values(rs))
	median := sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		median = (sorted[len(sorted)/2-1] + median) / 2
	}
	fmt.Fprintf(&sb, "(median %.2fx, %.2fx to %.2fx)", median, sorted[0], sorted[len(sorted)-1])
	return sb.String()
}

// write stores comparison.json and report.html in a new directory.
func (c *Comparison) write(resultsDir string) error {
	dir := filepath.Join(resultsDir, time.Now().UTC().Format("20060102-150405")+"-"+c.Workload)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var js bytes.Buffer
	if err := WriteJSON(&js, c); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "comparison.json"), js.Bytes(), 0o644); err != nil {
		return err
	}
	var page bytes.Buffer
	if err := writeHTML(&page, c); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.html"), page.Bytes(), 0o644); err != nil {
		return err
	}
	c.Dir = dir
	return nil
}

// basaltProcess is a basalt node started for a comparison.
type basaltProcess struct {
	cmd       *exec.Cmd
	done      chan struct{}
	clientURL string
	stderr    bytes.Buffer
}

func (p *basaltProcess) stop() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// startBasalt starts a basalt cluster of n members with their data under
// work. It returns the processes it started, also on error.
func startBasalt(ctx context.Context, bin, work string, n int, log io.Writer) ([]*basaltProcess, error) {
	if bin == "" {
		bin = filepath.Join(work, "basalt")
		fmt.Fprintln(log, "building basalt ...")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/basaltdb/basalt/cmd/basalt").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("bench: build basalt (or pass --basalt-bin): %v\n%s", err, out)
		}
	}
	addrs, err := freeAddrs(3 * n)
	if err != nil {
		return nil, err
	}
	var initial []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("b%d=http://%s", i+1, addrs[3*i+1]))
	}
	var ps []*basaltProcess
	for i := range n {
		p := &basaltProcess{clientURL: "http://" + addrs[3*i], done: make(chan struct{})}
		p.cmd = exec.Command(bin, "--name", fmt.Sprintf("b%d", i+1), "--data-dir", filepath.Join(work, fmt.Sprintf("basalt-data-%d", i+1)),
			"--listen-client-urls", p.clientURL, "--listen-peer-urls", "http://"+addrs[3*i+1], "--gossip-addr", addrs[3*i+2],
			"--initial-cluster", strings.Join(initial, ","), "--log-level", "error")
		p.cmd.Stderr = &p.stderr
		if err := p.cmd.Start(); err != nil {
			return ps, err
		}
		go func() {
			_ = p.cmd.Wait()
			close(p.done)
		}()
		ps = append(ps, p)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, p := range ps {
		if err := etcdproc.WaitHealthy(wctx, p.clientURL, p.done); err != nil {
			return ps, fmt.Errorf("bench: basalt: %w\n%s", err, p.stderr.String())
		}
	}
	return ps, nil
}

// freeAddrs returns n distinct loopback host:port pairs that were free a
// moment ago.
func freeAddrs(n int) ([]string, error) {
	var out []string
	for len(out) < n {
		a, err := etcdproc.FreeAddr()
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out, nil
}

// startEtcd starts an etcd 3.7.3 cluster of n members with their data
// under work: the same disk as Basalt's, fsync on. It returns the members
// it started, also on error.
func startEtcd(ctx context.Context, bin, work string, n int) ([]*etcdproc.Server, error) {
	addrs, err := freeAddrs(2 * n)
	if err != nil {
		return nil, err
	}
	var initial []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("e%d=http://%s", i+1, addrs[2*i+1]))
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	servers := make([]*etcdproc.Server, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			servers[i], errs[i] = etcdproc.Start(wctx, etcdproc.Options{Binary: bin, Dir: work, Name: fmt.Sprintf("e%d", i+1),
				ClientAddr: addrs[2*i], PeerAddr: addrs[2*i+1], InitialCluster: strings.Join(initial, ",")})
		}()
	}
	wg.Wait()
	var started []*etcdproc.Server
	for _, s := range servers {
		if s != nil {
			started = append(started, s)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return started, errors.Join(errors.New("bench: etcd (or pass --etcd-bin)"), err)
	}
	return started, nil
}
