package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestProcsTuner: the spare Ps come with the first busy window and end
// only after quietWindows quiet windows in a row; a busy window among
// quiet ones starts the count again.
func TestProcsTuner(t *testing.T) {
	var tu procsTuner
	step := func(mean float64, want procsChange) {
		t.Helper()
		if got := tu.observe(mean); got != want {
			t.Fatalf("mean %.1f in flight: decision %d, want %d", mean, got, want)
		}
	}
	step(0, procsKeep)
	step(1.9, procsKeep) // one client: never raised
	step(busyInFlight, procsRaise)
	step(50, procsKeep)
	for range quietWindows - 1 {
		step(0.5, procsKeep)
	}
	step(8, procsKeep) // busy again before the last quiet window
	for range quietWindows - 1 {
		step(0, procsKeep)
	}
	step(0, procsLower)
	step(0, procsKeep)
	step(3, procsRaise)
}

// TestBusyNodeRaisesProcs runs the real binary under a load of many
// concurrent puts: it adds two Ps while the load lasts and restores Go's
// default after it. A node whose environment sets GOMAXPROCS keeps it.
func TestBusyNodeRaisesProcs(t *testing.T) {
	t.Setenv("GOMAXPROCS", "1")
	p := startProcess(t, t.TempDir(), freeAddr(t), freeAddr(t), "--log-level", "info")
	stop := putLoad(t, p.clientURL, 16)
	time.Sleep(2 * time.Second) // ten windows of load
	stop()
	if log := p.log.String(); strings.Contains(log, "raised max-cpu-set") {
		t.Fatalf("GOMAXPROCS=1 in the environment, but the node changed it:\n%s", log)
	}
	p.kill()

	t.Setenv("GOMAXPROCS", "") // Go's default
	p = startProcess(t, t.TempDir(), freeAddr(t), freeAddr(t), "--log-level", "info")
	base := startLine(t, p.log.String()).MaxCPUSet
	stop = putLoad(t, p.clientURL, 16)
	p.waitLog("busy: raised max-cpu-set")
	stop()
	if got := procsLine(t, p.log.String(), "busy: raised max-cpu-set"); got != base+extraProcs {
		t.Errorf("busy: max-cpu-set %d, want %d (Go's default %d + %d)", got, base+extraProcs, base, extraProcs)
	}
	p.waitLog("idle: restored max-cpu-set")
	if got := procsLine(t, p.log.String(), "idle: restored max-cpu-set"); got != base {
		t.Errorf("idle again: max-cpu-set %d, want Go's default %d", got, base)
	}
	p.stop()
}

// putLoad runs clients writing in a loop against endpoint until the
// returned function is called; every put must succeed.
func putLoad(t *testing.T, endpoint string, clients int) (stop func()) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				if _, err := cli.Put(ctx, fmt.Sprintf("load/%d/%d", c, i%100), "v"); err != nil && ctx.Err() == nil {
					t.Errorf("put: %v", err)
					return
				}
			}
		})
	}
	return func() {
		cancel()
		wg.Wait()
		cli.Close()
	}
}

// procsLine returns the max-cpu-set of the last log line with msg.
func procsLine(t *testing.T, log, msg string) int {
	t.Helper()
	procs := -1
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l struct {
			Msg       string `json:"msg"`
			MaxCPUSet int    `json:"max-cpu-set"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == msg {
			procs = l.MaxCPUSet
		}
	}
	if procs < 0 {
		t.Fatalf("no %q line in the log:\n%s", msg, log)
	}
	return procs
}
