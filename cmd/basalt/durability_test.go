package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestKillDuringWritesLosesNothing kills the process with SIGKILL while
// clients write, restarts it on the same data, and checks that every
// acknowledged write is there with the revision it was acknowledged with,
// and that the next write's revision is above all of them.
func TestKillDuringWritesLosesNothing(t *testing.T) {
	dir := t.TempDir()
	client, peer := freeAddr(t), freeAddr(t)
	p := startProcess(t, dir, client, peer)
	cli := newClient(t, p.clientURL)

	type ack struct {
		key string
		rev int64
	}
	var (
		mu    sync.Mutex
		acked []ack
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(context.Background())
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				key := fmt.Sprintf("w%02d/%06d", w, i)
				rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
				resp, err := cli.Put(rctx, key, key)
				rcancel()
				if err != nil {
					continue // unacknowledged: may or may not be stored
				}
				mu.Lock()
				acked = append(acked, ack{key, resp.Header.Revision})
				mu.Unlock()
			}
		}()
	}
	// Let writes flow, then kill the process in the middle of them.
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 2000 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.kill()
	cancel()
	wg.Wait()
	cli.Close()
	if len(acked) < 100 {
		t.Fatalf("only %d writes acknowledged before the kill", len(acked))
	}

	p = startProcess(t, dir, client, peer)
	cli = newClient(t, p.clientURL)
	var maxRev int64
	for _, a := range acked {
		resp, err := cli.Get(context.Background(), a.key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != a.key || resp.Kvs[0].ModRevision != a.rev {
			t.Fatalf("acknowledged write %s at revision %d: after restart %v", a.key, a.rev, resp.Kvs)
		}
		maxRev = max(maxRev, a.rev)
	}
	resp, err := cli.Put(context.Background(), "after-restart", "v")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Revision <= maxRev {
		t.Fatalf("first write after restart at revision %d, not above the acknowledged %d", resp.Header.Revision, maxRev)
	}
	t.Logf("%d acknowledged writes survived the kill; next revision %d (highest acknowledged %d)", len(acked), resp.Header.Revision, maxRev)
}

// TestKillKeepsLeaseRemainingTTL kills the process with SIGKILL in the
// middle of two leases' TTLs, one of them renewed just before the kill.
// After the restart the first continues from its last checkpoint (not a
// fresh TTL) with its key, and the renewal of the second is not lost.
func TestKillKeepsLeaseRemainingTTL(t *testing.T) {
	dir := t.TempDir()
	client, peer := freeAddr(t), freeAddr(t)
	const ttl = 60
	flags := []string{"--lease-checkpoint-interval", "300ms"}
	p := startProcess(t, dir, client, peer, flags...)
	cli := newClient(t, p.clientURL)
	ctx := t.Context()
	running, err := cli.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "leased", "v", clientv3.WithLease(running.ID)); err != nil {
		t.Fatal(err)
	}
	renewed, err := cli.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(6 * time.Second)
	if _, err := cli.KeepAliveOnce(ctx, renewed.ID); err != nil {
		t.Fatal(err)
	}
	p.kill()

	p = startProcess(t, dir, client, peer, flags...)
	cli = newClient(t, p.clientURL)
	got, err := cli.TimeToLive(ctx, running.ID, clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	if got.TTL <= 0 || got.TTL > ttl-5 || len(got.Keys) != 1 {
		t.Fatalf("6s into a %ds lease, after a crash: remaining %ds, keys %q; want (0, %d] and the key", ttl, got.TTL, got.Keys, ttl-5)
	}
	got, err = cli.TimeToLive(ctx, renewed.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.TTL < ttl-3 {
		t.Fatalf("lease renewed just before the crash has %ds left of %ds", got.TTL, ttl)
	}
}

func newClient(t *testing.T, url string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
			t.Log(err)
		}
	})
	return cli
}
