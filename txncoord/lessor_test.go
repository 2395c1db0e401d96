package txncoord_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/basaltdb/basalt/internal/testnode"
)

// TestLeaseExpiryUnderLoad lets 1,000 leases with two keys each expire
// while writers keep writing: every attached key is deleted, each lease's
// keys at one revision, and a watcher sees every deletion.
func TestLeaseExpiryUnderLoad(t *testing.T) {
	const leases = 1000
	n := testnode.Start(t)
	c := n.Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	wch := c.Watch(ctx, "leased/", clientv3.WithPrefix(), clientv3.WithFilterPut(), clientv3.WithPrevKV())

	// Writers that go on through the expiries.
	loadCtx, stopLoad := context.WithCancel(ctx)
	var load sync.WaitGroup
	for w := range 4 {
		load.Add(1)
		go func() {
			defer load.Done()
			for i := 0; loadCtx.Err() == nil; i++ {
				_, _ = c.Put(loadCtx, fmt.Sprintf("load/%d/%d", w, i%100), "v")
			}
		}()
	}
	defer func() { stopLoad(); load.Wait() }()

	var g errgroup.Group
	g.SetLimit(16)
	for i := range leases {
		g.Go(func() error {
			l, err := c.Grant(ctx, 3)
			if err != nil {
				return err
			}
			_, err = c.Txn(ctx).Then(
				clientv3.OpPut(fmt.Sprintf("leased/%04d/a", i), "v", clientv3.WithLease(l.ID)),
				clientv3.OpPut(fmt.Sprintf("leased/%04d/b", i), "v", clientv3.WithLease(l.ID)),
			).Commit()
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}

	// Every deletion arrives; the two keys of a lease go at one revision.
	deletedAt := map[string]int64{}
	for len(deletedAt) < 2*leases {
		select {
		case resp, ok := <-wch:
			if !ok || resp.Err() != nil {
				t.Fatalf("watch ended after %d deletions: %v", len(deletedAt), resp.Err())
			}
			for _, ev := range resp.Events {
				if ev.Type != mvccpb.DELETE || ev.PrevKv == nil || ev.PrevKv.Lease == 0 {
					t.Fatalf("unexpected event %v", ev)
				}
				k := string(ev.Kv.Key)
				if _, dup := deletedAt[k]; dup {
					t.Fatalf("%s deleted twice", k)
				}
				deletedAt[k] = ev.Kv.ModRevision
			}
		case <-ctx.Done():
			t.Fatalf("saw %d of %d deletions", len(deletedAt), 2*leases)
		}
	}
	for i := range leases {
		a, b := deletedAt[fmt.Sprintf("leased/%04d/a", i)], deletedAt[fmt.Sprintf("leased/%04d/b", i)]
		if a != b {
			t.Fatalf("keys of lease %d deleted at revisions %d and %d", i, a, b)
		}
	}
	resp, err := c.Get(ctx, "leased/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Fatalf("%d leased keys left after every lease expired", resp.Count)
	}
	ls, err := c.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls.Leases) != 0 {
		t.Fatalf("%d leases left after expiry", len(ls.Leases))
	}
}

// TestLeaseRemainingTTLSurvivesRestart restarts a node in the middle of a
// lease's TTL: the lease continues with what was left (it neither gets a
// fresh TTL nor expires early), and a lease renewed before the restart
// keeps its renewal.
func TestLeaseRemainingTTLSurvivesRestart(t *testing.T) {
	n := testnode.Start(t, testnode.WithLeaseCheckpointInterval(200*time.Millisecond))
	c := n.Client(t)
	ctx := t.Context()
	const ttl = 20
	old, err := c.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "k", "v", clientv3.WithLease(old.ID)); err != nil {
		t.Fatal(err)
	}
	renewed, err := c.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if _, err := c.KeepAliveOnce(ctx, renewed.ID); err != nil {
		t.Fatal(err)
	}
	n.Restart()
	c = n.Client(t)

	got, err := c.TimeToLive(ctx, old.ID, clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	if got.TTL <= 0 || got.TTL > ttl-3 || got.GrantedTTL != ttl {
		t.Fatalf("after 3s and a restart, lease of %ds: remaining %ds, granted %ds; want (0, %d], %d", ttl, got.TTL, got.GrantedTTL, ttl-3, ttl)
	}
	if len(got.Keys) != 1 || string(got.Keys[0]) != "k" {
		t.Fatalf("keys of the lease after restart: %q", got.Keys)
	}
	got, err = c.TimeToLive(ctx, renewed.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.TTL < ttl-2 {
		t.Fatalf("lease renewed just before the restart has %ds left of %ds", got.TTL, ttl)
	}
}

// TestKeepAliveManyLeasesOneStream keeps 50 leases at the minimum TTL alive
// over one client's keep-alive stream for several TTLs; once keep-alives
// stop, all of them expire with their keys.
func TestKeepAliveManyLeasesOneStream(t *testing.T) {
	const leases = 50
	n := testnode.Start(t)
	c := n.Client(t)
	ctx := t.Context()
	kaCtx, stopKeepAlive := context.WithCancel(ctx)
	ids := make([]clientv3.LeaseID, leases)
	for i := range ids {
		l, err := c.Grant(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if l.TTL != 1 {
			t.Fatalf("granted TTL %d, want the 1s asked for", l.TTL)
		}
		ids[i] = l.ID
		if _, err := c.Put(ctx, fmt.Sprintf("ka/%02d", i), "v", clientv3.WithLease(l.ID)); err != nil {
			t.Fatal(err)
		}
		ch, err := c.KeepAlive(kaCtx, l.ID)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for range ch {
			}
		}()
	}
	time.Sleep(4 * time.Second)
	resp, err := c.Get(ctx, "ka/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != leases {
		t.Fatalf("%d of %d kept-alive keys left after 4 TTLs", resp.Count, leases)
	}
	stopKeepAlive()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := c.Get(ctx, "ka/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys still there 30s after keep-alives stopped", resp.Count)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, id := range ids {
		got, err := c.TimeToLive(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.TTL != -1 {
			t.Fatalf("expired lease %x: TTL %d, want -1", id, got.TTL)
		}
	}
}
