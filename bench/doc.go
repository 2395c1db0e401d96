// Package bench measures etcd-API clusters: it drives workloads (put,
// range, txn-put, txn-mixed, watch, lease-keepalive, and a Kubernetes-like
// k8s mix) from many clients over a few connections, records latencies in
// HDR histograms, and reports throughput, errors and percentiles. Compare
// runs one workload against Basalt and a real etcd 3.7.3 on the same
// machine, alternating between them, and writes a report (JSON and an HTML
// page with charts). For the servers it started it also reports their CPU
// time per request, beside the harness's own (from /proc, on Linux).
//
// Results carry their histograms (HdrHistogram's compressed encoding), so
// that runs made at the same time from several client machines merge into
// one exact result (Merge, basaltctl bench merge).
//
// The harness never asserts speed; it measures. See README.md for running
// it against remote clusters.
package bench
