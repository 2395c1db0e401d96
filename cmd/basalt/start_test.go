package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/basaltdb/basalt/internal/version"
)

// TestStartLine: like etcd, a node's first log line names its version,
// Go's, and the CPUs it runs with (max-cpu-set is GOMAXPROCS, which the
// environment sets as for any Go program; max-cpu-available the machine's).
func TestStartLine(t *testing.T) {
	for _, procs := range []int{1, 3} {
		t.Setenv("GOMAXPROCS", strconv.Itoa(procs))
		p := startProcess(t, t.TempDir(), freeAddr(t), freeAddr(t), "--log-level", "info")
		p.kill() // the log is read once the process is gone
		line := startLine(t, p.log.String())
		if line.MaxCPUSet != procs || line.MaxCPUAvailable != runtime.NumCPU() {
			t.Errorf("GOMAXPROCS=%d: max-cpu-set %d, max-cpu-available %d; want %d and %d",
				procs, line.MaxCPUSet, line.MaxCPUAvailable, procs, runtime.NumCPU())
		}
		if line.Version != version.Basalt || line.GoVersion != runtime.Version() {
			t.Errorf("versions %q and %q, want %q and %q", line.Version, line.GoVersion, version.Basalt, runtime.Version())
		}
	}
}

type startInfo struct {
	Version         string `json:"basalt-version"`
	GoVersion       string `json:"go-version"`
	MaxCPUSet       int    `json:"max-cpu-set"`
	MaxCPUAvailable int    `json:"max-cpu-available"`
}

// startLine finds the node's start line in its log.
func startLine(t *testing.T, log string) startInfo {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l struct {
			Msg string `json:"msg"`
			startInfo
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "starting a basalt node" {
			return l.startInfo
		}
	}
	t.Fatalf("no start line in the log:\n%s", log)
	return startInfo{}
}

// TestSignalWhileStarting: SIGTERM stops a node that is still starting (a
// member of a new cluster waiting for the others) cleanly, with exit code
// 0, as it stops a running one.
func TestSignalWhileStarting(t *testing.T) {
	peer := freeAddr(t)
	initial := fmt.Sprintf("e2e=http://%s,m2=http://%s,m3=http://%s", peer, freeAddr(t), freeAddr(t))
	p := launchProcess(t, t.TempDir(), freeAddr(t), peer, "--log-level", "info", "--initial-cluster", initial)
	p.waitLog("starting a basalt node")
	select {
	case <-p.done:
		t.Fatalf("exited before the signal, without the other members:\n%s", p.log)
	case <-time.After(time.Second):
	}
	p.stop() // fails unless the exit code is 0
	if log := p.log.String(); !strings.Contains(log, `"while":"starting"`) {
		t.Fatalf("no shutdown while starting in the log:\n%s", log)
	}
}
