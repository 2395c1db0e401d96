package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/basaltdb/basalt/bench"
	"github.com/basaltdb/basalt/internal/testnode"
)

func TestBenchCommand(t *testing.T) {
	n := testnode.Start(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "put.json")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"bench", "put", "--endpoints", n.ClientURL, "--clients", "4", "--conns", "2",
		"--total", "100", "--val-size", "64", "--key-space-size", "50", "--warmup", "0s", "--json", out}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "requests         100 in") || !strings.Contains(stdout.String(), "throughput") {
		t.Fatalf("output:\n%s", stdout.String())
	}
	r, err := bench.ReadResult(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 100 || r.Params["val-size"] != float64(64) || r.Histogram.Count() != 100 {
		t.Fatalf("result file: %+v", r)
	}
	// Two machines' results merge.
	stdout.Reset()
	if err := run(context.Background(), []string{"bench", "merge", out, out}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "requests         200 in") {
		t.Fatalf("merge output:\n%s", stdout.String())
	}
	// JSON on stdout.
	stdout.Reset()
	if err := run(context.Background(), []string{"bench", "range", "--endpoints", n.ClientURL, "--total", "20", "--warmup", "0s", "--consistency", "s", "--json", "-"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	var res bench.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil || res.Requests != 20 {
		t.Fatalf("json output: %v\n%s", err, stdout.String())
	}
}

func TestBenchCommandBadInput(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"nope"},
		{"bench"},
		{"bench", "nope", "--total", "1"},
		{"bench", "put", "--total", "-5"},
		{"bench", "put", "--clients", "2", "--total", "1"},
		{"bench", "put", "--progress", "maybe"},
		{"bench", "put", "--endpoints", ""},
		{"bench", "put", "extra-arg"},
		{"bench", "range", "--consistency", "z"},
		{"bench", "compare"},
		{"bench", "compare", "put", "--shards", "0"},
		{"bench", "compare", "put", "--shards", "65"},
		{"bench", "merge"},
		{"bench", "merge", filepath.Join(os.TempDir(), "does-not-exist.json")},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), args, &stdout, &stderr); err == nil {
			t.Errorf("basaltctl %v must fail", args)
		}
	}
}

// TestBenchCompare runs a short side-by-side comparison: a Basalt node and
// a real etcd started on loopback, the report written.
func TestBenchCompare(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"bench", "compare", "put", "--clients", "4", "--total", "2000",
		"--warmup", "0s", "--rounds", "2", "--results-dir", dir}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"basalt/etcd", "throughput/s", "p99.9 ms", "server CPU µs/req", "client CPU µs/req", "report: " + dir} {
		if !strings.Contains(out, want) {
			t.Fatalf("compare output lacks %q:\n%s", want, out)
		}
	}
	reports, _ := filepath.Glob(filepath.Join(dir, "*-put", "report.html"))
	js, _ := filepath.Glob(filepath.Join(dir, "*-put", "comparison.json"))
	if len(reports) != 1 || len(js) != 1 {
		t.Fatalf("report files: %v %v", reports, js)
	}
	data, _ := os.ReadFile(js[0])
	var c bench.Comparison
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Rounds) != 2 || c.Basalt.Requests != 4000 || c.Etcd.Requests != 4000 || c.ThroughputRatio <= 0 {
		t.Fatalf("comparison: %d rounds, basalt %d etcd %d requests, ratio %.2f", len(c.Rounds), c.Basalt.Requests, c.Etcd.Requests, c.ThroughputRatio)
	}
	// Both servers ran here: their CPU time is reported, and no process
	// used more CPU than the machine has (give or take /proc's 10 ms
	// ticks).
	for _, r := range []*bench.Result{c.Basalt, c.Etcd} {
		limit := r.Seconds*float64(runtime.NumCPU()) + 0.05
		if r.ServerCPU <= 0 || r.ServerCPU > limit || r.ClientCPU <= 0 || r.ClientCPU > limit {
			t.Fatalf("%s: server %.3f s, client %.3f s of CPU in %.2f s on %d CPUs", r.Target, r.ServerCPU, r.ClientCPU, r.Seconds, runtime.NumCPU())
		}
	}
	if c.ServerCPURatio <= 0 {
		t.Fatalf("no server CPU ratio: %+v", c)
	}
}

// TestBenchCompareClusters compares three-member clusters: three Basalt
// processes against three etcd members, requests spread over all of them.
func TestBenchCompareClusters(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"bench", "compare", "put", "--nodes", "3", "--clients", "6", "--conns", "3",
		"--total", "300", "--warmup", "0s", "--results-dir", dir, "--json", filepath.Join(dir, "out.json")}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	data, err := os.ReadFile(filepath.Join(dir, "out.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c bench.Comparison
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	if c.Basalt.Requests != 300 || c.Etcd.Requests != 300 || c.Basalt.Errors != 0 || c.Etcd.Errors != 0 {
		t.Fatalf("three-member comparison: basalt %d requests (%d errors), etcd %d (%d)", c.Basalt.Requests, c.Basalt.Errors, c.Etcd.Requests, c.Etcd.Errors)
	}
	// Every member's CPU counts, it was measured, and together they cannot
	// use more than the machine has (give or take a 10 ms tick of /proc per member).
	for _, r := range []*bench.Result{c.Basalt, c.Etcd} {
		if limit := r.Seconds*float64(runtime.NumCPU()) + 0.05; r.ServerCPU <= 0 || r.ServerCPU > limit {
			t.Fatalf("%s: three members used %.3f s of CPU in %.2f s on %d CPUs", r.Target, r.ServerCPU, r.Seconds, runtime.NumCPU())
		}
	}
}
