package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/basaltdb/basalt/internal/etcdproc"
)

// binary is the basalt binary built for these tests, ctlBinary basaltctl.
var binary, ctlBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "basalt-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "basalt")
	ctlBinary = filepath.Join(dir, "basaltctl")
	for bin, pkg := range map[string]string{binary: ".", ctlBinary: "../basaltctl"} {
		if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, out)
			os.Exit(1)
		}
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
	log       *lockedBuffer
	done      chan struct{}
}

func startProcess(t *testing.T, dataDir, clientAddr, peerAddr string, flags ...string) *process {
	t.Helper()
	p := launchProcess(t, dataDir, clientAddr, peerAddr, flags...)
	p.waitHealthy()
	return p
}

// launchProcess starts the binary without waiting until it serves (the
// members of a new cluster must start together).
func launchProcess(t *testing.T, dataDir, clientAddr, peerAddr string, flags ...string) *process {
	t.Helper()
	p := &process{t: t, dataDir: dataDir, clientURL: "http://" + clientAddr, peerURL: "http://" + peerAddr, log: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary, append([]string{
		"--name", "e2e",
		"--data-dir", dataDir,
		"--listen-client-urls", p.clientURL,
		"--listen-peer-urls", p.peerURL,
		"--gossip-addr", freeAddr(t),
		"--heartbeat-interval", "10",
		"--election-timeout", "100",
		"--log-level", "warn",
	}, flags...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

// waitHealthy waits until the process serves clients.
func (p *process) waitHealthy() {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := etcdproc.WaitHealthy(ctx, p.clientURL, p.done); err != nil {
		_ = p.cmd.Process.Signal(syscall.SIGQUIT) // its goroutines, into the log
		<-p.done
		p.t.Fatalf("%v:\n%s", err, p.log)
	}
}

// waitLog waits until the process has logged want.
func (p *process) waitLog(want string) {
	p.t.Helper()
	deadline := time.After(e2eWait)
	for !strings.Contains(p.log.String(), want) {
		select {
		case <-p.done:
			if strings.Contains(p.log.String(), want) {
				return
			}
			p.t.Fatalf("basalt exited without logging %q:\n%s", want, p.log)
		case <-deadline:
			p.t.Fatalf("basalt did not log %q within %v:\n%s", want, e2eWait, p.log)
		case <-time.After(20 * time.Millisecond):
		}
	}
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

// lockedBuffer is an output buffer a running command writes while the test
// reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// bgEtcdctl is an etcdctl command running in the background (lock and elect
// run until they are signalled).
type bgEtcdctl struct {
	t      *testing.T
	args   []string
	cmd    *exec.Cmd
	stdout *lockedBuffer
	stderr *lockedBuffer
	done   chan struct{}
	err    error // of Wait, once done is closed
}

func startEtcdctl(t *testing.T, endpoint string, args ...string) *bgEtcdctl {
	t.Helper()
	bin, err := etcdproc.ToolPath("etcdctl")
	if err != nil {
		t.Fatal(err)
	}
	b := &bgEtcdctl{t: t, args: args, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	b.cmd = exec.Command(bin, append([]string{"--endpoints", endpoint}, args...)...)
	b.cmd.Stdout, b.cmd.Stderr = b.stdout, b.stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		b.err = b.cmd.Wait()
		close(b.done)
	}()
	t.Cleanup(func() {
		select {
		case <-b.done:
		default:
			_ = b.cmd.Process.Kill()
			<-b.done
		}
	})
	return b
}

// e2eWait bounds waits for something that should happen soon.
const e2eWait = 20 * time.Second

// waitOutput waits until the command's stdout contains want.
func (b *bgEtcdctl) waitOutput(want string) {
	b.t.Helper()
	deadline := time.After(e2eWait)
	for !strings.Contains(b.stdout.String(), want) {
		select {
		case <-b.done:
			if strings.Contains(b.stdout.String(), want) {
				return
			}
			b.t.Fatalf("etcdctl %s exited (%v) without printing %q:\n%s%s", strings.Join(b.args, " "), b.err, want, b.stdout, b.stderr)
		case <-deadline:
			b.t.Fatalf("etcdctl %s did not print %q within %v:\n%s%s", strings.Join(b.args, " "), want, e2eWait, b.stdout, b.stderr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// running fails the test if the command has exited.
func (b *bgEtcdctl) running() {
	b.t.Helper()
	select {
	case <-b.done:
		b.t.Fatalf("etcdctl %s exited (%v) while it should wait:\n%s%s", strings.Join(b.args, " "), b.err, b.stdout, b.stderr)
	default:
	}
}

// wait waits for the command to exit and returns its exit code.
func (b *bgEtcdctl) wait() int {
	b.t.Helper()
	select {
	case <-b.done:
	case <-time.After(e2eWait):
		b.t.Fatalf("etcdctl %s did not exit within %v:\n%s%s", strings.Join(b.args, " "), e2eWait, b.stdout, b.stderr)
	}
	return b.cmd.ProcessState.ExitCode()
}

// interrupt sends SIGTERM (lock unlocks, elect resigns) and waits for the
// command to exit.
func (b *bgEtcdctl) interrupt() int {
	b.t.Helper()
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	return b.wait()
}

// waitKeyCount waits until `etcdctl get prefix --prefix --keys-only` lists n
// keys.
func waitKeyCount(t *testing.T, endpoint, prefix string, n int) {
	t.Helper()
	deadline := time.Now().Add(e2eWait)
	for {
		out, err := etcdctl(t, endpoint, "", "get", prefix, "--prefix", "--keys-only")
		if err != nil {
			t.Fatalf("get %s: %v\n%s", prefix, err, out)
		}
		if got := len(strings.Fields(out)); got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("keys under %s:\n%s\nwant %d keys", prefix, out, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leaseKeys matches the keys lock and elect put under a name: the name, a
// slash and the session's lease id in hex.
var leaseKeys = regexp.MustCompile(`(e2e-lock|e2e-elect)/[0-9a-f]+`)

// dropLeases replaces lease ids in lock and election keys, which differ
// between any two clusters.
func dropLeases(s string) string { return leaseKeys.ReplaceAllString(s, "$1/<lease>") }

// startEtcd starts a real etcd for a test to compare against.
func startEtcd(t *testing.T) *etcdproc.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	etcd, err := etcdproc.Start(ctx, etcdproc.Options{Dir: t.TempDir(), ClientAddr: freeAddr(t), PeerAddr: freeAddr(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Stop)
	return etcd
}

// lockScenario drives `etcdctl lock` against endpoint and returns what it
// printed, with lease ids dropped.
func lockScenario(t *testing.T, ep string) string {
	t.Helper()
	var transcript strings.Builder
	record := func(what, out string) { fmt.Fprintf(&transcript, "## %s\n%s", what, dropLeases(out)) }

	// With a command: the command runs holding the lock, told the lock's key
	// and revision; the lock is released when it exits.
	out, err := etcdctl(t, ep, "", "lock", "e2e-lock", "--", "sh", "-c", `echo "$ETCD_LOCK_KEY $ETCD_LOCK_REV"`)
	if err != nil {
		t.Fatalf("lock with a command: %v\n%s", err, out)
	}
	if f := strings.Fields(out); len(f) != 2 || !leaseKeys.MatchString(f[0]) || !strings.HasPrefix(f[0], "e2e-lock/") {
		t.Fatalf("lock with a command printed %q, want the lock key e2e-lock/<lease> and its revision", out)
	}
	record("lock -- echo key rev", out)
	out, err = etcdctl(t, ep, "", "get", "e2e-lock", "--prefix")
	if err != nil || out != "" {
		t.Fatalf("after the command exited the lock is still held: %v\n%s", err, out)
	}
	// The command's exit code is etcdctl's.
	_, err = etcdctl(t, ep, "", "lock", "e2e-lock", "--", "sh", "-c", "exit 3")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("lock running a command that exits 3: %v, want exit code 3", err)
	}

	// Without a command: print the lock key and hold it until signalled; a
	// second lock waits for it.
	holder := startEtcdctl(t, ep, "lock", "e2e-lock")
	holder.waitOutput("e2e-lock/")
	waiter := startEtcdctl(t, ep, "lock", "e2e-lock", "--", "sh", "-c", `echo "got $ETCD_LOCK_KEY $ETCD_LOCK_REV"`)
	waitKeyCount(t, ep, "e2e-lock", 2) // the waiter's key is in
	waiter.running()
	if out := waiter.stdout.String(); out != "" {
		t.Fatalf("the waiting lock ran its command while the lock is held: %q", out)
	}
	if code := holder.interrupt(); code != 0 {
		t.Fatalf("lock holder exited with %d on SIGTERM:\n%s%s", code, holder.stdout, holder.stderr)
	}
	if code := waiter.wait(); code != 0 {
		t.Fatalf("second lock exited with %d:\n%s%s", code, waiter.stdout, waiter.stderr)
	}
	hk, wk := strings.TrimSpace(holder.stdout.String()), strings.Fields(waiter.stdout.String())
	if len(wk) != 3 || wk[1] == hk || !strings.HasPrefix(wk[1], "e2e-lock/") {
		t.Fatalf("second lock printed %q after the holder %q, want its own key", waiter.stdout, hk)
	}
	record("lock (holder)", holder.stdout.String())
	record("lock -- echo got key rev (waiter)", waiter.stdout.String())
	out, err = etcdctl(t, ep, "", "get", "e2e-lock", "--prefix")
	if err != nil || out != "" {
		t.Fatalf("after both locks ended: %v\n%s", err, out)
	}
	return transcript.String()
}

// TestEtcdctlLock runs `etcdctl lock` against the binary and a real etcd:
// a command runs holding the lock, a second lock waits until the first is
// released, and the printed keys and revisions are etcd's.
func TestEtcdctlLock(t *testing.T) {
	basalt := startProcess(t, t.TempDir(), freeAddr(t), freeAddr(t))
	etcd := startEtcd(t)
	want := lockScenario(t, etcd.ClientURL)
	got := lockScenario(t, basalt.clientURL)
	if want != got {
		t.Fatalf("etcdctl lock:\netcd:\n%s\nbasalt:\n%s", want, got)
	}
}

// electScenario drives `etcdctl elect` against endpoint and returns what it
// printed, with lease ids dropped.
func electScenario(t *testing.T, ep string) string {
	t.Helper()
	observer := startEtcdctl(t, ep, "elect", "-l", "e2e-elect")
	first := startEtcdctl(t, ep, "elect", "e2e-elect", "p1")
	first.waitOutput("\np1\n")
	observer.waitOutput("\np1\n")

	second := startEtcdctl(t, ep, "elect", "e2e-elect", "p2")
	waitKeyCount(t, ep, "e2e-elect", 2) // the second candidate's key is in
	second.running()
	if out := second.stdout.String(); out != "" {
		t.Fatalf("second candidate elected while the first leads: %q", out)
	}
	// SIGTERM makes the leader resign: the second candidate leads.
	if code := first.interrupt(); code != 0 {
		t.Fatalf("first candidate exited with %d on SIGTERM:\n%s%s", code, first.stdout, first.stderr)
	}
	second.waitOutput("\np2\n")
	observer.waitOutput("\np2\n")
	if code := second.interrupt(); code != 0 {
		t.Fatalf("second candidate exited with %d on SIGTERM:\n%s%s", code, second.stdout, second.stderr)
	}
	if code := observer.interrupt(); code != 0 {
		t.Fatalf("observer exited with %d on SIGTERM:\n%s%s", code, observer.stdout, observer.stderr)
	}
	// The observer saw each leader's own key and value.
	if want := first.stdout.String() + second.stdout.String(); observer.stdout.String() != want {
		t.Fatalf("observer printed:\n%s\nwant the leaders' keys and values:\n%s", observer.stdout, want)
	}
	if out, err := etcdctl(t, ep, "", "get", "e2e-elect", "--prefix"); err != nil || out != "" {
		t.Fatalf("after both candidates resigned: %v\n%s", err, out)
	}
	return fmt.Sprintf("## first\n%s## second\n%s## observer\n%s",
		dropLeases(first.stdout.String()), dropLeases(second.stdout.String()), dropLeases(observer.stdout.String()))
}

// TestEtcdctlElect runs `etcdctl elect` candidates and an `elect -l`
// observer against the binary and a real etcd: the second candidate leads
// once the first resigns, the observer sees both, and the output is etcd's.
func TestEtcdctlElect(t *testing.T) {
	basalt := startProcess(t, t.TempDir(), freeAddr(t), freeAddr(t))
	etcd := startEtcd(t)
	want := electScenario(t, etcd.ClientURL)
	got := electScenario(t, basalt.clientURL)
	if want != got {
		t.Fatalf("etcdctl elect:\netcd:\n%s\nbasalt:\n%s", want, got)
	}
}
