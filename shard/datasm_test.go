package shard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	sm "github.com/lni/dragonboat/v4/statemachine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/proto/basaltpb"
)

func openDataSM(t *testing.T) *DataStateMachine {
	t.Helper()
	store, err := mvcc.Open("", mvcc.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	dsm := NewDataStateMachine(store, 2, 1, nil, nil, nil, zap.NewNop())
	if idx, err := dsm.Open(nil); err != nil || idx != 0 {
		t.Fatalf("open: %d %v", idx, err)
	}
	return dsm
}

func writeEntry(t *testing.T, index uint64, writes ...*basaltpb.Write) sm.Entry {
	t.Helper()
	cmd, err := proto.Marshal(&basaltpb.DataCommand{Command: &basaltpb.DataCommand_WriteBatch{WriteBatch: &basaltpb.WriteBatch{Writes: writes}}})
	if err != nil {
		t.Fatal(err)
	}
	return sm.Entry{Index: index, Cmd: cmd}
}

func write(t *testing.T, rev int64, txn *pb.TxnRequest) *basaltpb.Write {
	t.Helper()
	data, err := proto.Marshal(txn)
	if err != nil {
		t.Fatal(err)
	}
	return &basaltpb.Write{Revision: rev, Txn: data}
}

// recordingSink collects what apply reports.
type recordingSink struct{ outcomes []outcome }

func (r *recordingSink) Applied(rev int64, resp *pb.TxnResponse, err error) {
	r.outcomes = append(r.outcomes, outcome{rev, resp, err})
}

func (r *recordingSink) Proposed(int64) *pb.TxnRequest { return nil }
func (r *recordingSink) LockChanged()                  {}

// TestApplyIsDeterministic applies the same log to two replicas: the
// results and the stored history (HashKV) are identical, and a write whose
// revision is not above the shard's (a deposed leader's) is rejected.
func TestApplyIsDeterministic(t *testing.T) {
	var entries []sm.Entry
	rev := int64(2)
	for i := range 20 {
		var ws []*basaltpb.Write
		for j := range 3 {
			ws = append(ws, write(t, rev, putTxn(fmt.Sprintf("k%d", (i*3+j)%7), fmt.Sprint(i))))
			rev++
		}
		entries = append(entries, writeEntry(t, uint64(i+1), ws...))
	}
	stale := writeEntry(t, 21, write(t, 5, putTxn("late", "x")), write(t, rev, putTxn("ok", "y")))
	entries = append(entries, stale)

	var hashes []uint32
	var outs [][]byte
	for range 2 {
		dsm := openDataSM(t)
		sink := &recordingSink{}
		dsm.SetSink(sink)
		in := make([]sm.Entry, len(entries))
		copy(in, entries)
		if _, err := dsm.Update(in); err != nil {
			t.Fatal(err)
		}
		var all []byte
		for _, o := range sink.outcomes {
			b, _ := proto.Marshal(o.resp)
			all = append(all, b...)
			all = fmt.Appendf(all, "%d %v;", o.rev, o.err)
		}
		outs = append(outs, all)
		n := len(sink.outcomes)
		if n != 62 || !errors.Is(sink.outcomes[n-2].err, ErrStaleRevision) || sink.outcomes[n-1].err != nil {
			t.Fatalf("%d outcomes; stale write: %v, then %v", n, sink.outcomes[n-2].err, sink.outcomes[n-1].err)
		}
		h, _, err := dsm.Shard().HashKV(context.Background(), 0)
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, h.Hash)
		if dsm.Shard().AppliedIndex() != 21 || dsm.Shard().Rev() != rev {
			t.Fatalf("applied %d rev %d, want 21 %d", dsm.Shard().AppliedIndex(), dsm.Shard().Rev(), rev)
		}
	}
	if hashes[0] != hashes[1] || !bytes.Equal(outs[0], outs[1]) {
		t.Fatal("two replicas applying the same log diverged")
	}
}

// TestSnapshotEveryCountsWrites: a replica asks for a snapshot after every
// n applied writes, however many entries hold them, keeping the entries
// since the one before; a refused request is asked again at the next
// batch.
func TestSnapshotEveryCountsWrites(t *testing.T) {
	dsm := openDataSM(t)
	var asked []uint64
	accept := true
	dsm.SnapshotEvery(25, func(keep uint64) bool {
		asked = append(asked, keep)
		return accept
	})
	rev, index := int64(2), uint64(0)
	// entries returns count entries of ten puts each.
	entries := func(count int) []sm.Entry {
		var es []sm.Entry
		for range count {
			var ws []*basaltpb.Write
			for range 10 {
				ws = append(ws, write(t, rev, putTxn(fmt.Sprintf("k%d", rev%7), "v")))
				rev++
			}
			index++
			es = append(es, writeEntry(t, index, ws...))
		}
		return es
	}
	apply := func(es ...sm.Entry) {
		t.Helper()
		if _, err := dsm.Update(es); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(want ...uint64) {
		t.Helper()
		if !slices.Equal(asked, want) {
			t.Fatalf("asked for snapshots keeping %v entries, want %v", asked, want)
		}
	}

	for _, e := range entries(2) {
		apply(e)
	}
	expect() // 20 writes
	apply(entries(1)...)
	expect(3) // 30 writes in entries 1-3
	apply(entries(3)...)
	expect(3, 3) // 30 more in 4-6, applied in one batch

	accept = false
	for _, e := range entries(3) {
		apply(e)
	}
	expect(3, 3, 3) // refused at entry 9
	apply(entries(1)...)
	expect(3, 3, 3, 4) // asked again at 10, refused
	accept = true
	apply(entries(1)...)
	expect(3, 3, 3, 4, 5) // taken at 11: entries 7-11 since the last one
	for _, e := range entries(2) {
		apply(e)
	}
	expect(3, 3, 3, 4, 5)
}

// TestStateMachineSnapshot saves a replica's snapshot through dragonboat's
// interface and recovers another replica from it.
func TestStateMachineSnapshot(t *testing.T) {
	src := openDataSM(t)
	var entries []sm.Entry
	for i := range 10 {
		entries = append(entries, writeEntry(t, uint64(i+1), write(t, int64(i+2), putTxn(fmt.Sprintf("k%d", i%4), fmt.Sprint(i)))))
	}
	if _, err := src.Update(entries); err != nil {
		t.Fatal(err)
	}
	ctx, err := src.PrepareSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after PrepareSnapshot are not in the snapshot.
	if _, err := src.Update([]sm.Entry{writeEntry(t, 11, write(t, 12, putTxn("after", "x")))}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := src.SaveSnapshot(ctx, &buf, nil); err != nil {
		t.Fatal(err)
	}
	dst := openDataSM(t)
	if err := dst.RecoverFromSnapshot(&buf, nil); err != nil {
		t.Fatal(err)
	}
	if dst.Shard().AppliedIndex() != 10 || dst.Shard().Rev() != 11 {
		t.Fatalf("recovered applied=%d rev=%d, want 10 11", dst.Shard().AppliedIndex(), dst.Shard().Rev())
	}
	h1, _, _ := src.Shard().HashKV(context.Background(), 11)
	h2, _, _ := dst.Shard().HashKV(context.Background(), 11)
	if h1.Hash != h2.Hash {
		t.Fatal("recovered replica differs from the source at the snapshot's revision")
	}
	rr, _ := dst.Shard().View().Range(context.Background(), []byte("after"), nil, mvcc.RangeOptions{})
	if len(rr.KVs) != 0 {
		t.Fatal("a write after PrepareSnapshot leaked into the snapshot")
	}
}
