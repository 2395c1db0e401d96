package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/basaltpb"
)

// basaltctl runs the built basaltctl and returns its output.
func basaltctl(args ...string) (string, error) {
	out, err := exec.Command(ctlBinary, args...).CombinedOutput()
	return string(out), err
}

// splitAt splits the shard of the process that holds key at key.
func splitAt(t *testing.T, ctx context.Context, p *process, key string) {
	t.Helper()
	u, err := url.Parse(p.clientURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(u.Host, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := basaltpb.NewInternalClient(conn).Split(ctx, &basaltpb.SplitRequest{Key: []byte(key)}); err != nil {
		t.Fatalf("split at %q: %v", key, err)
	}
}

// snapshotView is what a user checks of a cluster restored from a snapshot
// taken at revision rev.
type snapshotView struct {
	hash     *clientv3.HashKVResponse
	atRev    []*mvccpb.KeyValue // every key at rev
	atOld    []*mvccpb.KeyValue // every key at an older revision
	events   []*clientv3.Event  // from the compacted revision on, up to rev
	leaseTTL int64
	leaseKey []string
}

func viewOf(t *testing.T, ctx context.Context, cli *clientv3.Client, rev, old, compacted int64, lease clientv3.LeaseID) snapshotView {
	t.Helper()
	var v snapshotView
	h, err := cli.HashKV(ctx, cli.Endpoints()[0], rev)
	if err != nil {
		t.Fatal(err)
	}
	v.hash = h
	for _, r := range []struct {
		rev int64
		kvs *[]*mvccpb.KeyValue
	}{{rev, &v.atRev}, {old, &v.atOld}} {
		resp, err := cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(r.rev))
		if err != nil {
			t.Fatal(err)
		}
		*r.kvs = resp.Kvs
	}
	// Events up to rev, or what arrived in 15 s (a history that lacks
	// events never reaches rev).
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for wr := range cli.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(compacted+1), clientv3.WithPrevKV()) {
		if err := wr.Err(); err != nil && wctx.Err() == nil {
			t.Fatal(err)
		}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision > rev {
				cancel()
				break
			}
			v.events = append(v.events, ev)
			if ev.Kv.ModRevision == rev {
				cancel()
			}
		}
	}
	ttl, err := cli.TimeToLive(ctx, lease, clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	v.leaseTTL = ttl.GrantedTTL
	for _, k := range ttl.Keys {
		v.leaseKey = append(v.leaseKey, string(k))
	}
	return v
}

func (a snapshotView) diff(b snapshotView) string {
	var d []string
	if a.hash.Hash != b.hash.Hash || a.hash.CompactRevision != b.hash.CompactRevision {
		d = append(d, fmt.Sprintf("HashKV %d (compacted %d) vs %d (compacted %d)", a.hash.Hash, a.hash.CompactRevision, b.hash.Hash, b.hash.CompactRevision))
	}
	kvsEqual := func(x, y []*mvccpb.KeyValue) bool {
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if !proto.Equal(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	if !kvsEqual(a.atRev, b.atRev) {
		d = append(d, fmt.Sprintf("keys at the revision: %d vs %d keys or different values", len(a.atRev), len(b.atRev)))
	}
	if !kvsEqual(a.atOld, b.atOld) {
		d = append(d, "keys at an older revision differ")
	}
	if len(a.events) != len(b.events) {
		d = append(d, fmt.Sprintf("%d events vs %d", len(a.events), len(b.events)))
	} else {
		for i := range a.events {
			x, y := a.events[i], b.events[i]
			if x.Type != y.Type || !proto.Equal(x.Kv, y.Kv) || !proto.Equal(x.PrevKv, y.PrevKv) {
				d = append(d, fmt.Sprintf("event %d: %v vs %v", i, x, y))
				break
			}
		}
	}
	if a.leaseTTL != b.leaseTTL || strings.Join(a.leaseKey, ",") != strings.Join(b.leaseKey, ",") {
		d = append(d, fmt.Sprintf("lease: TTL %d keys %v vs TTL %d keys %v", a.leaseTTL, a.leaseKey, b.leaseTTL, b.leaseKey))
	}
	return strings.Join(d, "\n")
}

// etcdctl snapshot save takes a snapshot of a node whose key space is split
// into shards, with history, a compaction, deletes, transactions across
// shards and a lease; basaltctl snapshot restore makes a new member's data
// directory of it. The new cluster answers as the old one did at the
// snapshot's revision (keys now and at an older revision, HashKV, the
// watch history from the compacted revision, the lease and its keys), and
// its next write takes the next revision.
func TestSnapshotSaveRestore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := startProcess(t, t.TempDir(), freeAddr(t), freeAddr(t))
	cli := newClient(t, p.clientURL)
	put := func(k, v string, opts ...clientv3.OpOption) int64 {
		t.Helper()
		resp, err := cli.Put(ctx, k, v, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	for i := range 100 {
		put(fmt.Sprintf("k%03d", i), "first")
	}
	splitAt(t, ctx, p, "k050")
	splitAt(t, ctx, p, "k080")
	var compacted int64
	for i := range 100 {
		rev := put(fmt.Sprintf("k%03d", i), fmt.Sprintf("second %d", i))
		if i == 30 {
			compacted = rev
		}
	}
	if _, err := cli.Compact(ctx, compacted, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	old := put("k010", "third")
	if _, err := cli.Delete(ctx, "k02", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	// A transaction across the three shards.
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut("k001", "txn"), clientv3.OpPut("k060", "txn"), clientv3.OpDelete("k090")).Commit(); err != nil {
		t.Fatal(err)
	}
	lease, err := cli.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	put("leased/a", "x", clientv3.WithLease(lease.ID))
	rev := put("leased/b", "y", clientv3.WithLease(lease.ID))
	want := viewOf(t, ctx, cli, rev, old, compacted, lease.ID)

	file := filepath.Join(t.TempDir(), "snap.db")
	out, err := etcdctl(t, p.clientURL, "", "snapshot", "save", file)
	if err != nil || !strings.Contains(out, "Snapshot saved at "+file) {
		t.Fatalf("etcdctl snapshot save: %v\n%s", err, out)
	}
	put("after/snapshot", "not in it")

	dataDir := filepath.Join(t.TempDir(), "restored")
	out, err = basaltctl("snapshot", "restore", file, "--data-dir", dataDir)
	if err != nil || !strings.Contains(out, fmt.Sprintf("revision %d", rev)) {
		t.Fatalf("basaltctl snapshot restore: %v\n%s", err, out)
	}
	// The same file, again, into a directory that now holds data.
	if out, err := basaltctl("snapshot", "restore", file, "--data-dir", dataDir); err == nil || !strings.Contains(out, "not empty") {
		t.Fatalf("restore into a non-empty data dir: %v\n%s", err, out)
	}

	// What a snapshot spools is removed when the process starts (here, as
	// if one had crashed while it streamed).
	spooled := filepath.Join(dataDir, "snapshot-1.part")
	if err := os.WriteFile(spooled, []byte("half a snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startProcess(t, dataDir, freeAddr(t), freeAddr(t))
	if _, err := os.Stat(spooled); !os.IsNotExist(err) {
		t.Errorf("a spooled snapshot survived the start: %v", err)
	}
	rcli := newClient(t, r.clientURL)
	got := viewOf(t, ctx, rcli, rev, old, compacted, lease.ID)
	if d := want.diff(got); d != "" {
		t.Fatalf("the restored cluster differs from the snapshot's:\n%s", d)
	}
	if resp, err := rcli.Get(ctx, "after/snapshot"); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("a write after the snapshot was restored: %v %v", err, resp)
	}
	if resp, err := rcli.Get(ctx, "k", clientv3.WithPrefix(), clientv3.WithRev(compacted-1)); err == nil {
		t.Fatalf("a read below the compacted revision succeeded: %v", resp.Kvs)
	}
	if next, err := rcli.Put(ctx, "after/restore", "v"); err != nil || next.Header.Revision != rev+1 {
		t.Fatalf("first write after the restore: %v, revision %v (want %d)", err, next, rev+1)
	}
	if _, err := rcli.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	if resp, err := rcli.Get(ctx, "leased/", clientv3.WithPrefix()); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("revoking the restored lease left its keys: %v %v", err, resp)
	}
}

// Restoring a file that is not a whole Basalt snapshot fails, says why, and
// leaves no data directory behind.
func TestSnapshotRestoreBadFiles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := startProcess(t, t.TempDir(), freeAddr(t), freeAddr(t))
	if _, err := newClient(t, p.clientURL).Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	if out, err := etcdctl(t, p.clientURL, "", "snapshot", "save", good); err != nil {
		t.Fatalf("etcdctl snapshot save: %v\n%s", err, out)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte(nil), data...)
	flipped[len(backupHeader)+3] ^= 0xff
	zeros := make([]byte, 512+32) // the right size, but no checksum
	sum := sha256.Sum256(zeros[:512])
	summed := append(zeros[:512:512], sum[:]...) // a checksum, but no snapshot
	for _, c := range []struct {
		name, want string
		data       []byte
	}{
		{"flipped", "expected sha256", flipped},
		{"truncated", "not a multiple of 512", data[:len(data)-100]},
		{"zeros", "expected sha256", zeros},
		{"not a snapshot", "not a Basalt snapshot", summed},
		{"empty", "not a multiple of 512", nil},
	} {
		file := filepath.Join(dir, c.name+".db")
		if err := os.WriteFile(file, c.data, 0o600); err != nil {
			t.Fatal(err)
		}
		dataDir := filepath.Join(dir, c.name+"-data")
		out, err := basaltctl("snapshot", "restore", file, "--data-dir", dataDir)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%s: %v, want %q in\n%s", c.name, err, c.want, out)
		}
		if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
			t.Errorf("%s: the data dir is there after a failed restore: %v", c.name, err)
		}
	}
	if out, err := basaltctl("snapshot", "restore", filepath.Join(dir, "missing.db"), "--data-dir", filepath.Join(dir, "m")); err == nil || !strings.Contains(out, "no such file") {
		t.Errorf("missing file: %v\n%s", err, out)
	}
	if out, err := basaltctl("snapshot", "restore", good); err == nil || !strings.Contains(out, "usage") {
		t.Errorf("no --data-dir: %v\n%s", err, out)
	}
}

// backupHeader is how a Basalt snapshot starts.
const backupHeader = "basalt-backup-1\n"
