package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/basaltdb/basalt/internal/etcdproc"
)

// haproxyBinary returns HAProxy's path, installing Debian's package when it
// is missing (the tests run as root on Debian).
func haproxyBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	install := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "-q", "haproxy")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := install(); err != nil {
		if out, err := exec.CommandContext(ctx, "apt-get", "update", "-q").CombinedOutput(); err != nil {
			t.Fatalf("apt-get update: %v\n%s", err, out)
		}
		if err := install(); err != nil {
			t.Fatalf("install haproxy: %v", err)
		}
	}
	p, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startHAProxy runs HAProxy in TCP mode in front of the processes, with the
// settings of deploy/haproxy.cfg, and returns its client URL.
func startHAProxy(t *testing.T, ps []*process) string {
	t.Helper()
	bin := haproxyBinary(t)
	sample, err := os.ReadFile("../../deploy/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	// The sample's settings, with this test's addresses.
	var cfg []string
	for _, line := range strings.Split(string(sample), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "bind":
			line = "    bind " + addr
		case len(f) > 0 && f[0] == "server":
			continue
		}
		cfg = append(cfg, line)
	}
	for i, p := range ps {
		cfg = append(cfg, fmt.Sprintf("    server m%d %s check", i+1, strings.TrimPrefix(p.clientURL, "http://")))
	}
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(strings.Join(cfg, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", path)
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := etcdproc.WaitHealthy(ctx, "http://"+addr, done); err != nil {
		t.Fatalf("haproxy: %v\n%s", err, log)
	}
	return "http://" + addr
}

// TestBehindHAProxy runs etcdctl and clientv3 through HAProxy in front of
// three members and kills one member with SIGKILL: writes go on, the watch
// stream resumes without losing or repeating an event, and the lease kept
// alive through HAProxy stays alive.
func TestBehindHAProxy(t *testing.T) {
	ps := startCluster(t)
	lb := startHAProxy(t, ps)
	if out, err := etcdctl(t, lb, "", "put", "via", "haproxy"); err != nil {
		t.Fatalf("etcdctl put through haproxy: %v\n%s", err, out)
	}
	cli := newClient(t, lb)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	lease, err := cli.Grant(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "alive", "v", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	ka, err := cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range ka { // drain
		}
	}()
	watch := cli.Watch(ctx, "w/", clientv3.WithPrefix())

	var (
		mu    sync.Mutex
		acked = map[int64]string{}
	)
	put := func(i int) {
		key := fmt.Sprintf("w/%04d", i)
		pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
		defer pcancel()
		if resp, err := cli.Put(pctx, key, key); err == nil {
			mu.Lock()
			acked[resp.Header.Revision] = key
			mu.Unlock()
		}
	}
	for i := range 100 {
		put(i)
	}
	// Kill the member that leads (the hardest one to lose).
	ps[dataLeader(t, ps)].kill()
	killed := time.Now()
	for i := 100; time.Since(killed) < 8*time.Second; i++ {
		put(i)
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	n := len(acked)
	mu.Unlock()
	if n < 150 {
		t.Fatalf("only %d writes acknowledged through haproxy", n)
	}

	// Every acknowledged write reached the watcher once, in order.
	seen := map[int64]bool{}
	var last int64
	for len(seen) < n {
		select {
		case wr := <-watch:
			if err := wr.Err(); err != nil {
				t.Fatalf("watch: %v", err)
			}
			for _, ev := range wr.Events {
				if ev.Type != mvccpb.PUT || ev.Kv.ModRevision <= last {
					t.Fatalf("watch event %v after revision %d", ev, last)
				}
				last = ev.Kv.ModRevision
				if _, ok := acked[last]; ok {
					seen[last] = true
				}
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("watch saw %d of %d acknowledged writes", len(seen), n)
		}
	}
	// 8 s after the kill the 3 s lease lives on: keep-alives got through.
	ttl, err := cli.TimeToLive(ctx, lease.ID)
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("lease kept alive through haproxy: %v %v", err, ttl)
	}
	if resp, err := cli.Get(ctx, "alive"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("key of the kept-alive lease: %v %v", err, resp)
	}
	if out, err := etcdctl(t, lb, "", "get", "via", "--print-value-only"); err != nil || strings.TrimSpace(out) != "haproxy" {
		t.Fatalf("etcdctl get through haproxy after the kill: %v\n%s", err, out)
	}
}
