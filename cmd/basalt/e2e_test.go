package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/basaltdb/basalt/internal/etcdproc"
)

// binary is the basalt binary built for these tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "basalt-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "basalt")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build basalt: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// process is a basalt binary running for a test.
type process struct {
	t         *testing.T
	cmd       *exec.Cmd
	dataDir   string
	clientURL string
	peerURL   string
	log       *bytes.Buffer
	done      chan struct{}
}

func startProcess(t *testing.T, dataDir, clientAddr, peerAddr string) *process {
	t.Helper()
	p := &process{t: t, dataDir: dataDir, clientURL: "http://" + clientAddr, peerURL: "http://" + peerAddr, log: &bytes.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary,
		"--name", "e2e",
		"--data-dir", dataDir,
		"--listen-client-urls", p.clientURL,
		"--listen-peer-urls", p.peerURL,
		"--heartbeat-interval", "10",
		"--election-timeout", "100",
		"--log-level", "warn",
	)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := etcdproc.WaitHealthy(ctx, p.clientURL, p.done); err != nil {
		t.Fatalf("%v:\n%s", err, p.log)
	}
	return p
}

// kill sends SIGKILL and waits.
func (p *process) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// stop sends SIGTERM and waits for a clean exit.
func (p *process) stop() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("basalt did not stop on SIGTERM:\n%s", p.log)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		p.t.Fatalf("basalt exited with %d on SIGTERM:\n%s", code, p.log)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	a, err := etcdproc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// etcdctl runs the real etcdctl against endpoint with stdin and returns its
// output (stdout and stderr).
func etcdctl(t *testing.T, endpoint, stdin string, args ...string) (string, error) {
	t.Helper()
	bin, err := etcdproc.ToolPath("etcdctl")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"--endpoints", endpoint, "--command-timeout", "10s"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestEtcdctlMatchesEtcd drives the built binary with the real etcdctl and
// runs every command against a real etcd too: the outputs must be equal.
func TestEtcdctlMatchesEtcd(t *testing.T) {
	basalt := startProcess(t, t.TempDir(), freeAddr(t), freeAddr(t))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	etcd, err := etcdproc.Start(ctx, etcdproc.Options{Dir: t.TempDir(), ClientAddr: freeAddr(t), PeerAddr: freeAddr(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Stop()

	txn := "value(\"a\") = \"1\"\n\nput a 2\nget a\n\nput a 1\n\n"
	txnFail := "mod(\"b\") > \"100\"\n\nput b hit\n\nput b miss\nget b --prev-kv\n\n"
	steps := []struct {
		stdin string
		args  []string
	}{
		{"", []string{"put", "a", "1"}},
		{"", []string{"put", "b", "1"}},
		{"", []string{"put", "b", "2", "--prev-kv"}},
		{"", []string{"put", "b/x", "3"}},
		{"", []string{"put", "b/y", "4"}},
		{"", []string{"put", "c", "5"}},
		{"", []string{"get", "a"}},
		{"", []string{"get", "b", "--prefix"}},
		{"", []string{"get", "b", "--prefix", "--limit", "2"}},
		{"", []string{"get", "b", "--rev", "3"}},
		{"", []string{"get", "", "--prefix", "--sort-by", "VALUE", "--order", "DESCEND"}},
		{"", []string{"get", "", "--prefix", "--sort-by", "MODIFY", "--order", "ASCEND"}},
		{"", []string{"get", "b", "--prefix", "--keys-only"}},
		{"", []string{"get", "b", "--prefix", "--count-only", "-w", "fields"}},
		{"", []string{"get", "b", "--prefix", "--print-value-only"}},
		{"", []string{"get", "a", "c", "-w", "fields"}},
		{"", []string{"get", "b", "--from-key"}},
		{"", []string{"del", "b/x", "--prev-kv"}},
		{"", []string{"del", "b", "--prefix", "--prev-kv"}},
		{"", []string{"del", "nothing"}},
		{txn, []string{"txn"}},
		{txn, []string{"txn", "-w", "fields"}},
		{txnFail, []string{"txn"}},
		{"", []string{"get", "", "--prefix", "-w", "fields"}},
		{"", []string{"compaction", "4"}},
		{"", []string{"compaction", "4"}},
		{"", []string{"compaction", "100"}},
		{"", []string{"get", "a", "--rev", "2"}},
		{"", []string{"compaction", "6", "--physical"}},
		{"", []string{"get", "", "--prefix", "--rev", "6"}},
		{"", []string{"put", "", "x"}},
		{"", []string{"get", "a", "--rev", "1000"}},
	}
	for _, s := range steps {
		want, errE := etcdctl(t, etcd.ClientURL, s.stdin, s.args...)
		got, errB := etcdctl(t, basalt.clientURL, s.stdin, s.args...)
		want, got = dropIDs(want), dropIDs(got)
		if want != got || (errE == nil) != (errB == nil) {
			t.Errorf("etcdctl %s:\netcd (%v):\n%s\nbasalt (%v):\n%s", strings.Join(s.args, " "), errE, want, errB, got)
		}
	}

	out, err := etcdctl(t, basalt.clientURL, "", "endpoint", "status", "-w", "json")
	if err != nil {
		t.Fatalf("endpoint status: %v\n%s", err, out)
	}
	var status []struct {
		Endpoint string
		Status   struct {
			Header struct {
				MemberID uint64 `json:"member_id"`
			}
			Version string
			Leader  uint64
			DbSize  int64  `json:"dbSize"`
			Index   uint64 `json:"raftIndex"`
			Term    uint64 `json:"raftTerm"`
		}
	}
	if err := json.Unmarshal([]byte(out), &status); err != nil {
		t.Fatalf("endpoint status: %v\n%s", err, out)
	}
	st := status[0].Status
	if !strings.HasPrefix(st.Version, "3.6.") || st.Leader == 0 || st.Leader != st.Header.MemberID || st.DbSize <= 0 || st.Index == 0 || st.Term == 0 {
		t.Fatalf("endpoint status reports %+v", st)
	}

	out, err = etcdctl(t, basalt.clientURL, "", "member", "list")
	if err != nil {
		t.Fatalf("member list: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("started, e2e, %s, %s, false", basalt.peerURL, basalt.clientURL); !strings.Contains(out, want) {
		t.Fatalf("member list:\n%s\nwant a line with %q", out, want)
	}
	out, err = etcdctl(t, basalt.clientURL, "", "endpoint", "health")
	if err != nil || !strings.Contains(out, "is healthy") {
		t.Fatalf("endpoint health: %v\n%s", err, out)
	}
}

// dropIDs removes what differs between any two clusters from etcdctl's
// output: the cluster and member ids and the Raft term of the "fields"
// format, and the client's log lines (timestamps and ports).
func dropIDs(out string) string {
	var keep []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "\"ClusterID\"") || strings.HasPrefix(line, "\"MemberID\"") ||
			strings.HasPrefix(line, "\"RaftTerm\"") || strings.HasPrefix(line, "{\"level\"") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}

// TestCleanRestart stops the binary with SIGTERM and starts it again: all
// data is there and revisions continue without a gap.
func TestCleanRestart(t *testing.T) {
	dir := t.TempDir()
	client, peer := freeAddr(t), freeAddr(t)
	p := startProcess(t, dir, client, peer)
	for i := range 5 {
		if out, err := etcdctl(t, p.clientURL, "", "put", fmt.Sprintf("k%d", i), "v"); err != nil {
			t.Fatalf("put: %v %s", err, out)
		}
	}
	p.stop()
	p = startProcess(t, dir, client, peer)
	out, err := etcdctl(t, p.clientURL, "", "get", "k", "--prefix", "--keys-only")
	if err != nil || strings.Count(out, "k") != 5 {
		t.Fatalf("after restart: %v\n%s", err, out)
	}
	out, err = etcdctl(t, p.clientURL, "", "put", "next", "v", "-w", "json")
	if err != nil || !strings.Contains(out, `"revision":7`) {
		t.Fatalf("first write after a clean restart must get revision 7 (no gap): %v\n%s", err, out)
	}
	p.stop()
}

// TestEtcdctlWatch runs `etcdctl watch` against the binary and a real etcd
// through the same writes: the printed events must match.
func TestEtcdctlWatch(t *testing.T) {
	basalt := startProcess(t, t.TempDir(), freeAddr(t), freeAddr(t))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	etcd, err := etcdproc.Start(ctx, etcdproc.Options{Dir: t.TempDir(), ClientAddr: freeAddr(t), PeerAddr: freeAddr(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Stop()

	bin, err := etcdproc.ToolPath("etcdctl")
	if err != nil {
		t.Fatal(err)
	}
	outputs := make([]*bytes.Buffer, 2)
	for i, ep := range []string{etcd.ClientURL, basalt.clientURL} {
		for _, args := range [][]string{{"put", "w/a", "1"}, {"put", "w/b", "2"}} {
			if out, err := etcdctl(t, ep, "", args...); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
		// From revision 2 with previous values, then live.
		cmd := exec.Command(bin, "--endpoints", ep, "watch", "w/", "--prefix", "--rev", "2", "--prev-kv")
		outputs[i] = &bytes.Buffer{}
		cmd.Stdout = outputs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		for _, args := range [][]string{{"put", "w/a", "3"}, {"del", "w/b"}, {"put", "other", "x"}, {"txn"}} {
			stdin := ""
			if args[0] == "txn" {
				stdin = "\n\nput w/c 4\nput w/d 5\n\n"
			}
			if out, err := etcdctl(t, ep, stdin, args...); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
		time.Sleep(500 * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
	if outputs[0].String() != outputs[1].String() || outputs[0].Len() == 0 {
		t.Fatalf("etcdctl watch:\netcd:\n%s\nbasalt:\n%s", outputs[0], outputs[1])
	}
}
