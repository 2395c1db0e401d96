package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
)

// Result is what one run measured. Its JSON form is the machine-readable
// report; the histogram travels with it so that results can be merged.
type Result struct {
	Workload     string                 `json:"workload"`
	Target       string                 `json:"target,omitempty"`
	Params       map[string]any         `json:"params,omitempty"`
	Clients      int                    `json:"clients"`
	Conns        int                    `json:"conns"`
	Rate         float64                `json:"rate,omitempty"`
	Requests     int64                  `json:"requests"`
	Errors       int64                  `json:"errors"`
	ErrorSamples map[string]int64       `json:"error_samples,omitempty"`
	Seconds      float64                `json:"seconds"`
	Throughput   float64                `json:"throughput"`
	Latency      Percentiles            `json:"latency"`
	Extra        map[string]Percentiles `json:"extra,omitempty"`
	Histogram    *Histogram             `json:"histogram"`
	// ServerCPU is the CPU time, in seconds, that the cluster's processes
	// used during the measured part: known only for local processes
	// (compare's), else 0. ClientCPU is the harness's own, 0 where /proc
	// cannot tell.
	ServerCPU float64 `json:"server_cpu_seconds,omitempty"`
	ClientCPU float64 `json:"client_cpu_seconds,omitempty"`
}

// ServerCPUPerRequest and ClientCPUPerRequest are the CPU microseconds
// per request (0 when not measured).
func (r *Result) ServerCPUPerRequest() float64 { return perRequestMicros(r.ServerCPU, r.Requests) }

// ClientCPUPerRequest: see ServerCPUPerRequest.
func (r *Result) ClientCPUPerRequest() float64 { return perRequestMicros(r.ClientCPU, r.Requests) }

func perRequestMicros(seconds float64, requests int64) float64 {
	if requests == 0 {
		return 0
	}
	return seconds * 1e6 / float64(requests)
}

// Merge combines results of the same workload measured at the same time
// from several client machines against one cluster: requests and errors
// add up, throughputs add up, latency histograms merge exactly.
func Merge(results []*Result) (*Result, error) {
	if len(results) == 0 {
		return nil, errors.New("bench: nothing to merge")
	}
	out := &Result{
		Workload:     results[0].Workload,
		Target:       results[0].Target,
		Params:       results[0].Params,
		ErrorSamples: map[string]int64{},
		Histogram:    NewHistogram(),
	}
	for _, r := range results {
		if r.Workload != out.Workload {
			return nil, fmt.Errorf("bench: cannot merge %s with %s", r.Workload, out.Workload)
		}
		if r.Histogram == nil {
			return nil, fmt.Errorf("bench: a %s result has no histogram", r.Workload)
		}
		out.Clients += r.Clients
		out.Conns += r.Conns
		out.Rate += r.Rate
		out.Requests += r.Requests
		out.Errors += r.Errors
		out.Throughput += r.Throughput
		// The client machines watched one cluster at the same time.
		out.ServerCPU = max(out.ServerCPU, r.ServerCPU)
		out.ClientCPU += r.ClientCPU
		out.Seconds = max(out.Seconds, r.Seconds)
		for k, v := range r.ErrorSamples {
			out.ErrorSamples[k] += v
		}
		out.Histogram.Merge(r.Histogram)
	}
	out.Latency = out.Histogram.Percentiles()
	return out, nil
}

// WriteJSON writes results as indented JSON.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ReadResult reads a result written by WriteJSON.
func ReadResult(path string) (*Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r Result
	if err := json.NewDecoder(f).Decode(&r); err != nil {
		return nil, fmt.Errorf("bench: %s: %w", path, err)
	}
	return &r, nil
}

// PrintResult writes a human-readable summary.
func PrintResult(w io.Writer, r *Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "workload\t%s %s\n", r.Workload, formatParams(r.Params))
	if r.Target != "" {
		fmt.Fprintf(tw, "target\t%s\n", r.Target)
	}
	fmt.Fprintf(tw, "clients / conns\t%d / %d\n", r.Clients, r.Conns)
	fmt.Fprintf(tw, "requests\t%d in %.2fs (%d errors)\n", r.Requests, r.Seconds, r.Errors)
	fmt.Fprintf(tw, "throughput\t%.1f/s\n", r.Throughput)
	l := r.Latency
	fmt.Fprintf(tw, "latency ms\tp50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f\n", l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean)
	if r.ServerCPU > 0 {
		fmt.Fprintf(tw, "server CPU\t%.1f µs/request\n", r.ServerCPUPerRequest())
	}
	if r.ClientCPU > 0 {
		fmt.Fprintf(tw, "client CPU\t%.1f µs/request\n", r.ClientCPUPerRequest())
	}
	for _, name := range sortedKeys(r.Extra) {
		e := r.Extra[name]
		fmt.Fprintf(tw, "%s latency ms\tp50 %.3f  p99 %.3f  max %.3f\n", name, e.P50, e.P99, e.Max)
	}
	for _, msg := range sortedKeys(r.ErrorSamples) {
		fmt.Fprintf(tw, "error\t%dx %s\n", r.ErrorSamples[msg], msg)
	}
	tw.Flush()
}

func formatParams(p map[string]any) string {
	parts := make([]string, 0, len(p))
	for _, k := range sortedKeys(p) {
		parts = append(parts, fmt.Sprintf("%s=%v", k, p[k]))
	}
	return strings.Join(parts, " ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
