package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/basaltdb/basalt/internal/difftest"
	"github.com/basaltdb/basalt/internal/testnode"
)

func TestHistogramPercentiles(t *testing.T) {
	h := NewHistogram()
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	p := h.Percentiles()
	near := func(name string, got, want float64) {
		if math.Abs(got-want)/want > 0.01 {
			t.Errorf("%s = %.3f ms, want about %.3f", name, got, want)
		}
	}
	if p.Count != 1000 {
		t.Fatalf("count %d", p.Count)
	}
	near("p50", p.P50, 500)
	near("p90", p.P90, 900)
	near("p99", p.P99, 990)
	near("p99.9", p.P999, 999)
	near("max", p.Max, 1000)
	near("mean", p.Mean, 500.5)

	// Out-of-range values are clamped, not dropped.
	h.Record(0)
	h.Record(time.Hour)
	if h.Count() != 1002 || h.Percentiles().Max < 299_000 {
		t.Fatalf("clamping: count %d max %.0f ms", h.Count(), h.Percentiles().Max)
	}
}

func TestHistogramMergeAndEncoding(t *testing.T) {
	a, b := NewHistogram(), NewHistogram()
	for i := 0; i < 500; i++ {
		a.Record(time.Millisecond)
		b.Record(10 * time.Millisecond)
	}
	text, err := b.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	c := NewHistogram()
	if err := c.UnmarshalText(text); err != nil {
		t.Fatal(err)
	}
	a.Merge(c)
	p := a.Percentiles()
	if p.Count != 1000 || p.P50 > 1.01 || p.P90 < 9.9 {
		t.Fatalf("merged: %+v", p)
	}
	for _, bad := range []string{"not base64!", "AAAA", "HISTFAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"} {
		if err := NewHistogram().UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("UnmarshalText(%q) must fail", bad)
		}
	}
}

func TestKeysAndWorkloadConfig(t *testing.T) {
	if k := makeKey(8, 99999); len(k) != 8 {
		t.Fatalf("key of %d bytes, want 8", len(k))
	}
	if makeKey(8, 1) == makeKey(8, 2) {
		t.Fatal("different numbers must give different keys")
	}
	if k := makeKey(64, 5); len(k) != 64 {
		t.Fatalf("key of %d bytes, want 64", len(k))
	}
	cfg := DefaultWorkloadConfig()
	cfg.KeySpace = 10
	cfg.SequentialKeys = true
	p := keyPicker{cfg: cfg}
	w := &Worker{}
	seen := map[string]int{}
	for range 30 {
		seen[p.next(w)]++
	}
	if len(seen) != 10 {
		t.Fatalf("sequential keys over a space of 10 hit %d keys", len(seen))
	}
	for k, n := range seen {
		if n != 3 {
			t.Fatalf("key %q written %d times, want 3", k, n)
		}
	}

	bad := []struct {
		name string
		mod  func(*WorkloadConfig)
	}{
		{"range", func(c *WorkloadConfig) { c.Consistency = "x" }},
		{"txn-put", func(c *WorkloadConfig) { c.TxnOps = 5; c.KeySpace = 3 }},
		{"txn-mixed", func(c *WorkloadConfig) { c.ReadRatio = 2 }},
		{"watch", func(c *WorkloadConfig) { c.Streams = 0 }},
		{"lease-keepalive", func(c *WorkloadConfig) { c.Leases = 0 }},
		{"k8s", func(c *WorkloadConfig) { c.PageSize = 0 }},
		{"put", func(c *WorkloadConfig) { c.KeySize = 0 }},
		{"nope", func(*WorkloadConfig) {}},
	}
	for _, b := range bad {
		c := DefaultWorkloadConfig()
		b.mod(&c)
		if _, err := NewWorkload(b.name, c); err == nil {
			t.Errorf("%s with a bad setting must fail", b.name)
		}
	}
	if err := (&Options{Endpoints: []string{"x"}, Total: -1}).Validate(); err == nil {
		t.Error("a negative --total must fail")
	}
	if err := (&Options{}).Validate(); err == nil {
		t.Error("no endpoints must fail")
	}
}

func TestMergeAndReports(t *testing.T) {
	mk := func(target string, reqs int64, lat time.Duration, secs float64) *Result {
		h := NewHistogram()
		for range reqs {
			h.Record(lat)
		}
		// The servers use 50 µs of CPU per request, the client 20.
		return &Result{Workload: "put", Target: target, Clients: 10, Conns: 2, Requests: reqs, Seconds: secs,
			Throughput: float64(reqs) / secs, Latency: h.Percentiles(), Histogram: h, Params: map[string]any{"val-size": 256},
			ServerCPU: float64(reqs) * 50e-6, ClientCPU: float64(reqs) * 20e-6}
	}
	// Two client machines at once: throughputs add, histograms merge, and
	// client CPU adds up; the server CPU both saw is one cluster's.
	a, b := mk("a", 1000, time.Millisecond, 10), mk("b", 3000, 3*time.Millisecond, 10)
	a.ServerCPU = b.ServerCPU
	m, err := Merge([]*Result{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if m.Requests != 4000 || m.Throughput != 400 || m.Clients != 20 || m.Latency.P50 < 2.9 {
		t.Fatalf("merged %+v", m)
	}
	if math.Abs(m.ClientCPUPerRequest()-20) > 1e-6 || math.Abs(m.ServerCPU-0.15) > 1e-9 {
		t.Fatalf("merged CPU: client %.2f µs/request, server %.3f s", m.ClientCPUPerRequest(), m.ServerCPU)
	}
	if _, err := Merge([]*Result{mk("a", 1, time.Millisecond, 1), {Workload: "range", Histogram: NewHistogram()}}); err == nil {
		t.Fatal("merging different workloads must fail")
	}

	// A result survives its JSON form, histogram included.
	dir := t.TempDir()
	var buf bytes.Buffer
	if err := WriteJSON(&buf, m); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "r.json")
	os.WriteFile(path, buf.Bytes(), 0o644)
	back, err := ReadResult(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Histogram.Count() != 4000 || back.Latency != m.Latency {
		t.Fatalf("round trip lost data: %+v", back)
	}

	// Comparison: two sequential rounds per target; ratios; report files.
	// The machine is faster in the second round: Basalt gains more.
	etcdRound := func(reqs int64) *Result {
		r := mk("etcd", reqs, 2*time.Millisecond, 10)
		r.ServerCPU *= 2 // 100 µs per request
		return r
	}
	c := &Comparison{Workload: "put", Rounds: []Round{
		{Basalt: mk("basalt", 1500, time.Millisecond, 10), Etcd: etcdRound(900)},
		{Basalt: mk("basalt", 2500, time.Millisecond, 10), Etcd: etcdRound(1100)},
	}}
	if err := c.summarize(); err != nil {
		t.Fatal(err)
	}
	if c.Basalt.Throughput != 200 || c.ThroughputRatio != 2 || math.Abs(c.LatencyRatio["p50"]-0.5) > 0.01 {
		t.Fatalf("summary: throughput %.1f ratio %.2f p50 ratio %.2f", c.Basalt.Throughput, c.ThroughputRatio, c.LatencyRatio["p50"])
	}
	if len(c.RoundRatios) != 2 || math.Abs(c.RoundRatios[0]-1500.0/900) > 1e-9 || math.Abs(c.RoundRatios[1]-2500.0/1100) > 1e-9 {
		t.Fatalf("round ratios %v, want 1.67 and 2.27", c.RoundRatios)
	}
	if got := formatRatios([]float64{1.5, 1.2, 1.4}); got != "1.50x 1.20x 1.40x (median 1.40x, 1.20x to 1.50x)" {
		t.Fatalf("formatRatios: %q", got)
	}
	if got := formatRatios(nil); got != "" {
		t.Fatalf("formatRatios(nil): %q", got)
	}
	// Rounds ran one after another: their server CPU adds up.
	if math.Abs(c.Basalt.ServerCPUPerRequest()-50) > 1e-6 || math.Abs(c.ServerCPURatio-0.5) > 1e-9 {
		t.Fatalf("summary: basalt server CPU %.2f µs/request, ratio %.3f", c.Basalt.ServerCPUPerRequest(), c.ServerCPURatio)
	}
	if err := c.write(dir); err != nil {
		t.Fatal(err)
	}
	page, err := os.ReadFile(filepath.Join(c.Dir, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<svg", "2.00x", "200.0", "basalt vs etcd 3.7.3: put", "server CPU µs/request", "0.50x",
		"per round: 1.67x 2.27x (median 1.97x, 1.67x to 2.27x)"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("report.html lacks %q", want)
		}
	}
	js, _ := os.ReadFile(filepath.Join(c.Dir, "comparison.json"))
	var decoded Comparison
	if err := json.Unmarshal(js, &decoded); err != nil || decoded.ThroughputRatio != 2 || !slices.Equal(decoded.RoundRatios, c.RoundRatios) {
		t.Fatalf("comparison.json: %v %v %v", err, decoded.ThroughputRatio, decoded.RoundRatios)
	}
	var table bytes.Buffer
	PrintComparison(&table, c)
	if !strings.Contains(table.String(), "2.00x") || !strings.Contains(strings.Join(strings.Fields(table.String()), " "), "server CPU µs/req 50.0 100.0 0.50x") ||
		!strings.Contains(table.String(), "throughput ratio per round: 1.67x 2.27x (median 1.97x, 1.67x to 2.27x)\n") {
		t.Fatalf("table:\n%s", table.String())
	}
}

// TestRunAgainstNode runs each workload, briefly, against an in-process
// node.
func TestRunAgainstNode(t *testing.T) {
	n := testnode.Start(t)
	for _, name := range Workloads {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultWorkloadConfig()
			cfg.KeySpace, cfg.TxnOps = 100, 4
			cfg.Streams, cfg.WatchersPer, cfg.Leases, cfg.Objects, cfg.PageSize, cfg.Watchers = 2, 3, 5, 50, 20, 2
			w, err := NewWorkload(name, cfg)
			if err != nil {
				t.Fatal(err)
			}
			res, err := Run(context.Background(), Options{Endpoints: []string{n.ClientURL}, Clients: 4, Conns: 2, Total: 200}, w)
			if err != nil {
				t.Fatal(err)
			}
			want := int64(200)
			if name == "watch" {
				want = 200 * 2 * 3 // every put reaches every watcher
			}
			if res.Requests != 200 || res.Errors != 0 || res.Latency.Count != want || res.Throughput <= 0 {
				t.Fatalf("%s: %d requests, %d errors %v, %d latencies", name, res.Requests, res.Errors, res.ErrorSamples, res.Latency.Count)
			}
		})
	}
	// A rate limit holds the run to about the rate.
	w, _ := NewWorkload("put", DefaultWorkloadConfig())
	res, err := Run(context.Background(), Options{Endpoints: []string{n.ClientURL}, Clients: 4, Total: 40, Rate: 100}, w)
	if err != nil {
		t.Fatal(err)
	}
	if res.Seconds < 0.3 {
		t.Fatalf("40 requests at 100/s took %.2fs", res.Seconds)
	}
}

// TestRunFailsAgainstNoCluster: a run against an endpoint where nothing
// listens ends with an error, rather than waiting for ever for clientv3
// to connect.
func TestRunFailsAgainstNoCluster(t *testing.T) {
	ep := fmt.Sprintf("http://127.0.0.1:%d", testnode.FreePort(t))
	w, _ := NewWorkload("put", DefaultWorkloadConfig())
	done := make(chan error, 1)
	go func() {
		_, err := Run(context.Background(), Options{Endpoints: []string{ep}, Duration: 100 * time.Millisecond}, w)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "still unanswered") {
			t.Fatalf("a run against %s with nothing listening: %v", ep, err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("a run against %s with nothing listening has not ended after a minute", ep)
	}
}

// TestConnectSpreadsConnectionsOverEndpoints checks that each connection
// talks to one endpoint, the endpoints taken in turn, as etcd's benchmark
// tool does: a put through connection i lands on server i mod 2 only.
func TestConnectSpreadsConnectionsOverEndpoints(t *testing.T) {
	a, b := testnode.Start(t), testnode.Start(t)
	clis, err := Connect(Options{Endpoints: []string{a.ClientURL, b.ClientURL}, Conns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(clis)
	ctx := context.Background()
	for i, c := range clis {
		if _, err := c.Put(ctx, fmt.Sprintf("conn-%d", i), "v"); err != nil {
			t.Fatalf("put through connection %d: %v", i, err)
		}
	}
	for i, n := range []*testnode.Node{a, b} {
		resp, err := n.Client(t).Get(ctx, "conn-", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, kv := range resp.Kvs {
			got = append(got, string(kv.Key))
		}
		want := []string{fmt.Sprintf("conn-%d", i), fmt.Sprintf("conn-%d", i+2)}
		if !slices.Equal(got, want) {
			t.Errorf("server %d holds %v, want %v", i, got, want)
		}
	}
}

// TestEventWorkloadsAgainstEtcd runs the workloads that need watches and
// leases against a real etcd: the harness measures both sides alike.
func TestEventWorkloadsAgainstEtcd(t *testing.T) {
	addr := difftest.StartEtcd(t)
	for _, name := range []string{"watch", "lease-keepalive", "k8s"} {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultWorkloadConfig()
			cfg.Streams, cfg.WatchersPer, cfg.Leases, cfg.Objects, cfg.PageSize, cfg.Watchers = 2, 3, 5, 50, 20, 2
			w, err := NewWorkload(name, cfg)
			if err != nil {
				t.Fatal(err)
			}
			res, err := Run(context.Background(), Options{Endpoints: []string{"http://" + addr}, Clients: 2, Total: 100}, w)
			if err != nil {
				t.Fatal(err)
			}
			if res.Errors != 0 {
				t.Fatalf("%s: errors %v", name, res.ErrorSamples)
			}
			switch name {
			case "watch":
				// 100 puts, each seen by 2x3 watchers.
				if res.Latency.Count != 600 || res.Extra["request"].Count != 100 {
					t.Fatalf("watch: %d deliveries for %d puts", res.Latency.Count, res.Extra["request"].Count)
				}
			case "k8s":
				if res.Latency.Count != 100 || res.Extra["delivery"].Count == 0 {
					t.Fatalf("k8s: %d requests, %d deliveries", res.Latency.Count, res.Extra["delivery"].Count)
				}
			}
		})
	}
}

// SplitKeys divides the benchmark's key space into shards of about equal
// size.
func TestSplitKeysSpreadTheKeySpace(t *testing.T) {
	for _, n := range []int{2, 4, 16} {
		splits := SplitKeys(n)
		if len(splits) != n-1 {
			t.Fatalf("%d shards: %d split keys", n, len(splits))
		}
		counts := make([]int, n)
		const keys = 100000
		for i := range keys {
			k := makeKey(8, int64(i))
			shard := 0
			for shard < len(splits) && k >= string(splits[shard]) {
				shard++
			}
			counts[shard]++
		}
		for i, c := range counts {
			if c < keys/n*9/10 || c > keys/n*11/10 {
				t.Errorf("%d shards: shard %d holds %d of %d keys: %v", n, i, c, keys, counts)
			}
		}
	}
}

func TestKeyInPartFallsInItsShard(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{2, 8} {
		splits := SplitKeys(n)
		for i := range n {
			for range 1000 {
				k := makeKey(8, keyInPart(r, 100000, i, n))
				shard := 0
				for shard < len(splits) && k >= string(splits[shard]) {
					shard++
				}
				if shard != i {
					t.Fatalf("%d parts: a key of part %d is in shard %d", n, i, shard)
				}
			}
		}
	}
}
