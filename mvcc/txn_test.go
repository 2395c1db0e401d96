package mvcc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// testShard is one shard on an in-memory store, written the way the shard
// state machine writes it: one Writer per applied entry, revisions in order.
type testShard struct {
	t     *testing.T
	store *Store
	sh    *Shard
	index uint64
}

func newTestShard(t *testing.T) *testShard {
	t.Helper()
	st, err := Open("", Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sh, err := st.OpenShard(2, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &testShard{t: t, store: st, sh: sh}
}

// txn applies a write transaction at the next revision, as the sequencer
// would only for a transaction that writes.
func (s *testShard) txn(rt *pb.TxnRequest) (*pb.TxnResponse, error) {
	s.t.Helper()
	w := s.sh.NewWriter()
	resp, changed, err := w.ApplyTxn(context.Background(), s.sh.Rev()+1, rt, nil)
	if err != nil || !changed {
		w.Abort()
		return resp, err
	}
	s.index++
	if err := w.Commit(s.index); err != nil {
		s.t.Fatal(err)
	}
	return resp, nil
}

func (s *testShard) put(key, value string) int64 {
	s.t.Helper()
	resp, err := s.txn(txnOf(putOp(key, value)))
	if err != nil {
		s.t.Fatal(err)
	}
	return resp.Header.Revision
}

func (s *testShard) del(key, end string) int64 {
	s.t.Helper()
	resp, err := s.txn(txnOf(delOp(key, end)))
	if err != nil {
		s.t.Fatal(err)
	}
	return resp.Responses[0].GetResponseDeleteRange().Deleted
}

func (s *testShard) compact(rev int64) {
	s.t.Helper()
	w := s.sh.NewWriter()
	if err := w.Compact(rev); err != nil {
		s.t.Fatal(err)
	}
	s.index++
	if err := w.Commit(s.index); err != nil {
		s.t.Fatal(err)
	}
}

func (s *testShard) rangeReq(r *pb.RangeRequest) (*pb.RangeResponse, error) {
	return ExecuteRange(context.Background(), s.sh.View(), r)
}

func txnOf(ops ...*pb.RequestOp) *pb.TxnRequest { return &pb.TxnRequest{Success: ops} }

func putOp(key, value string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte(value)}}}
}

func delOp(key, end string) *pb.RequestOp {
	d := &pb.DeleteRangeRequest{Key: []byte(key)}
	if end != "" {
		d.RangeEnd = []byte(end)
	}
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: d}}
}

func rangeOp(r *pb.RangeRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: r}}
}

func keysOf(kvs []*mvccpb.KeyValue) string {
	var b bytes.Buffer
	for i, kv := range kvs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", kv.Key, kv.Value)
	}
	return b.String()
}

func TestRevisionsFollowEtcd(t *testing.T) {
	s := newTestShard(t)
	if got := s.sh.Rev(); got != 1 {
		t.Fatalf("an empty store is at revision 1, got %d", got)
	}
	if rev := s.put("a", "1"); rev != 2 {
		t.Fatalf("first write at revision %d, want 2", rev)
	}
	if rev := s.put("b", "1"); rev != 3 {
		t.Fatalf("second write at revision %d, want 3", rev)
	}
	// A delete of nothing changes nothing and takes no revision.
	if n := s.del("zzz", ""); n != 0 || s.sh.Rev() != 3 {
		t.Fatalf("delete of an absent key deleted %d, revision %d", n, s.sh.Rev())
	}
	// A Txn with two puts is one revision with two sub revisions.
	resp, err := s.txn(txnOf(putOp("c", "1"), putOp("d", "1")))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Revision != 4 || s.sh.Rev() != 4 {
		t.Fatalf("two-put txn at revision %d, store at %d; want 4", resp.Header.Revision, s.sh.Rev())
	}
	it, _ := s.store.db.NewIter(&pebble.IterOptions{LowerBound: []byte{keyspaceChange}, UpperBound: []byte{keyspaceChange + 1}})
	defer it.Close()
	var revs []Revision
	for ok := it.First(); ok; ok = it.Next() {
		r, _ := decodeChangeKey(it.Key())
		revs = append(revs, r)
	}
	want := []Revision{{2, 0}, {3, 0}, {4, 0}, {4, 1}}
	if fmt.Sprint(revs) != fmt.Sprint(want) {
		t.Fatalf("change log revisions %v, want %v", revs, want)
	}
}

func TestRangeOptions(t *testing.T) {
	s := newTestShard(t)
	s.put("a", "3")     // 2
	s.put("b", "2")     // 3
	s.put("c", "1")     // 4
	s.put("a", "0")     // 5: a has version 2
	s.put("d", "9")     // 6
	s.del("d", "")      // 7
	s.put("b\x00", "x") // 8

	cases := []struct {
		name      string
		req       *pb.RangeRequest
		keys      string
		count     int64
		more      bool
		headerRev int64
	}{
		{"single key", &pb.RangeRequest{Key: []byte("a")}, "a=0", 1, false, 8},
		{"absent key", &pb.RangeRequest{Key: []byte("d")}, "", 0, false, 8},
		{"range", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("c")}, "a=0 b=2 b\x00=x", 3, false, 8},
		{"from key", &pb.RangeRequest{Key: []byte("b"), RangeEnd: []byte{0}}, "b=2 b\x00=x c=1", 3, false, 8},
		{"all", &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}, "a=0 b=2 b\x00=x c=1", 4, false, 8},
		{"prefix", &pb.RangeRequest{Key: []byte("b"), RangeEnd: []byte("c")}, "b=2 b\x00=x", 2, false, 8},
		{"end before key", &pb.RangeRequest{Key: []byte("c"), RangeEnd: []byte("a")}, "", 0, false, 8},
		{"limit", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), Limit: 2}, "a=0 b=2", 4, true, 8},
		{"limit exact", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), Limit: 4}, "a=0 b=2 b\x00=x c=1", 4, false, 8},
		{"at revision", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), Revision: 6}, "a=0 b=2 c=1 d=9", 4, false, 8},
		{"at revision 2", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), Revision: 2}, "a=3", 1, false, 8},
		{"count only", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), CountOnly: true}, "", 4, false, 8},
		{"keys only", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("b"), KeysOnly: true}, "a=", 1, false, 8},
		{"sort value asc", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), SortTarget: pb.RangeRequest_VALUE}, "a=0 c=1 b=2 b\x00=x", 4, false, 8},
		{"sort key desc", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), SortOrder: pb.RangeRequest_DESCEND}, "c=1 b\x00=x b=2 a=0", 4, false, 8},
		{"sort mod desc limit", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_MOD, Limit: 2}, "b\x00=x a=0", 4, true, 8},
		{"sort create asc", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), SortOrder: pb.RangeRequest_ASCEND, SortTarget: pb.RangeRequest_CREATE}, "a=0 b=2 c=1 b\x00=x", 4, false, 8},
		{"sort version desc", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_VERSION, Limit: 1}, "a=0", 4, true, 8},
		{"min mod", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), MinModRevision: 4}, "a=0 b\x00=x c=1", 4, false, 8},
		{"max mod", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), MaxModRevision: 4}, "b=2 c=1", 4, false, 8},
		{"min create", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), MinCreateRevision: 3}, "b=2 b\x00=x c=1", 4, false, 8},
		{"max create limit", &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), MaxCreateRevision: 4, Limit: 2}, "a=0 b=2", 4, true, 8},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := s.rangeReq(c.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := keysOf(resp.Kvs); got != c.keys || resp.Count != c.count || resp.More != c.more || resp.Header.Revision != c.headerRev {
				t.Fatalf("got %q count=%d more=%v rev=%d, want %q count=%d more=%v rev=%d",
					got, resp.Count, resp.More, resp.Header.Revision, c.keys, c.count, c.more, c.headerRev)
			}
		})
	}

	// Metadata of a key with history: a=3 at 2, a=0 at 5.
	resp, _ := s.rangeReq(&pb.RangeRequest{Key: []byte("a")})
	kv := resp.Kvs[0]
	if kv.CreateRevision != 2 || kv.ModRevision != 5 || kv.Version != 2 {
		t.Fatalf("a: create=%d mod=%d version=%d, want 2 5 2", kv.CreateRevision, kv.ModRevision, kv.Version)
	}
	// A key deleted and put again starts a new generation.
	s.put("d", "again") // 9
	resp, _ = s.rangeReq(&pb.RangeRequest{Key: []byte("d")})
	if kv := resp.Kvs[0]; kv.CreateRevision != 9 || kv.Version != 1 {
		t.Fatalf("recreated d: create=%d version=%d, want 9 1", kv.CreateRevision, kv.Version)
	}

	if _, err := s.rangeReq(&pb.RangeRequest{Key: []byte("a"), Revision: 100}); !errors.Is(err, ErrFutureRev) {
		t.Fatalf("read at a future revision: %v, want ErrFutureRev", err)
	}
}

func TestTxnComparesAndNesting(t *testing.T) {
	s := newTestShard(t)
	s.put("k", "v1") // 2
	s.put("k", "v2") // 3

	cmp := func(target pb.Compare_CompareTarget, result pb.Compare_CompareResult, u any) *pb.Compare {
		c := &pb.Compare{Key: []byte("k"), Target: target, Result: result}
		switch target {
		case pb.Compare_VALUE:
			c.TargetUnion = &pb.Compare_Value{Value: []byte(u.(string))}
		case pb.Compare_VERSION:
			c.TargetUnion = &pb.Compare_Version{Version: int64(u.(int))}
		case pb.Compare_CREATE:
			c.TargetUnion = &pb.Compare_CreateRevision{CreateRevision: int64(u.(int))}
		case pb.Compare_MOD:
			c.TargetUnion = &pb.Compare_ModRevision{ModRevision: int64(u.(int))}
		case pb.Compare_LEASE:
			c.TargetUnion = &pb.Compare_Lease{Lease: int64(u.(int))}
		}
		return c
	}
	cases := []struct {
		c    *pb.Compare
		want bool
	}{
		{cmp(pb.Compare_VALUE, pb.Compare_EQUAL, "v2"), true},
		{cmp(pb.Compare_VALUE, pb.Compare_GREATER, "v1"), true},
		{cmp(pb.Compare_VALUE, pb.Compare_LESS, "v1"), false},
		{cmp(pb.Compare_VERSION, pb.Compare_EQUAL, 2), true},
		{cmp(pb.Compare_VERSION, pb.Compare_NOT_EQUAL, 2), false},
		{cmp(pb.Compare_CREATE, pb.Compare_EQUAL, 2), true},
		{cmp(pb.Compare_MOD, pb.Compare_GREATER, 2), true},
		{cmp(pb.Compare_MOD, pb.Compare_LESS, 3), false},
		{cmp(pb.Compare_LEASE, pb.Compare_EQUAL, 0), true},
	}
	for _, c := range cases {
		resp, err := ReadTxn(context.Background(), s.sh.View(), &pb.TxnRequest{Compare: []*pb.Compare{c.c}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Succeeded != c.want {
			t.Fatalf("compare %v: succeeded=%v, want %v", c.c, resp.Succeeded, c.want)
		}
	}
	// An absent key: version 0, create 0; a value compare always fails.
	absent := &pb.Compare{Key: []byte("nope"), Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Version{Version: 0}}
	absentValue := &pb.Compare{Key: []byte("nope"), Target: pb.Compare_VALUE, Result: pb.Compare_NOT_EQUAL, TargetUnion: &pb.Compare_Value{Value: []byte("x")}}
	// A compare over a range holds only if every key holds.
	rangeCmp := &pb.Compare{Key: []byte("a"), RangeEnd: []byte("z"), Target: pb.Compare_VERSION, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Version{Version: 0}}
	for _, c := range []struct {
		c    *pb.Compare
		want bool
	}{{absent, true}, {absentValue, false}, {rangeCmp, true}} {
		resp, err := ReadTxn(context.Background(), s.sh.View(), &pb.TxnRequest{Compare: []*pb.Compare{c.c}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Succeeded != c.want {
			t.Fatalf("compare %v: succeeded=%v, want %v", c.c, resp.Succeeded, c.want)
		}
	}

	// Nested: the outer compare fails, the failure branch holds a Txn whose
	// compare holds and which puts; reads inside see the write.
	nested := &pb.TxnRequest{
		Compare: []*pb.Compare{cmp(pb.Compare_VALUE, pb.Compare_EQUAL, "nope")},
		Failure: []*pb.RequestOp{
			rangeOp(&pb.RangeRequest{Key: []byte("k")}),
			{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{
				Compare: []*pb.Compare{cmp(pb.Compare_VERSION, pb.Compare_EQUAL, 2)},
				Success: []*pb.RequestOp{putOp("n1", "x"), putOp("n2", "y")},
			}}},
			rangeOp(&pb.RangeRequest{Key: []byte("n"), RangeEnd: []byte("o")}),
		},
	}
	if _, err := ReadTxn(context.Background(), s.sh.View(), nested, nil); !errors.Is(err, ErrTxnWrites) {
		t.Fatalf("ReadTxn of a writing txn: %v, want ErrTxnWrites", err)
	}
	resp, err := s.txn(nested)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Succeeded || resp.Header.Revision != 4 {
		t.Fatalf("nested txn succeeded=%v rev=%d, want false 4", resp.Succeeded, resp.Header.Revision)
	}
	first := resp.Responses[0].GetResponseRange()
	inner := resp.Responses[1].GetResponseTxn()
	last := resp.Responses[2].GetResponseRange()
	if first.Header.Revision != 3 || !inner.Succeeded || inner.Header.Revision != 0 || last.Header.Revision != 4 || keysOf(last.Kvs) != "n1=x n2=y" {
		t.Fatalf("nested responses: first rev %d, inner %v, last rev %d %q", first.Header.Revision, inner, last.Header.Revision, keysOf(last.Kvs))
	}
	for i, r := range inner.Responses {
		if r.GetResponsePut().Header.Revision != 4 {
			t.Fatalf("inner put %d at revision %d, want 4", i, r.GetResponsePut().Header.Revision)
		}
	}
}

func TestPutOptionsAndErrors(t *testing.T) {
	s := newTestShard(t)
	s.put("k", "v1") // 2
	put := func(p *pb.PutRequest) (*pb.PutResponse, error) {
		resp, err := s.txn(&pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: p}}}})
		if err != nil {
			return nil, err
		}
		return resp.Responses[0].GetResponsePut(), nil
	}
	resp, err := put(&pb.PutRequest{Key: []byte("k"), Value: []byte("v2"), PrevKv: true})
	if err != nil || string(resp.PrevKv.Value) != "v1" || resp.Header.Revision != 3 {
		t.Fatalf("put with prev_kv: %v %v", resp, err)
	}
	resp, err = put(&pb.PutRequest{Key: []byte("k"), IgnoreValue: true})
	if err != nil || resp.Header.Revision != 4 {
		t.Fatalf("put with ignore_value: %v %v", resp, err)
	}
	got, _ := s.rangeReq(&pb.RangeRequest{Key: []byte("k")})
	if string(got.Kvs[0].Value) != "v2" || got.Kvs[0].Version != 3 {
		t.Fatalf("ignore_value must keep the value and bump the version: %v", got.Kvs[0])
	}
	for _, p := range []*pb.PutRequest{
		{Key: []byte("absent"), IgnoreValue: true},
		{Key: []byte("absent"), IgnoreLease: true},
	} {
		if _, err := put(p); !errors.Is(err, ErrKeyNotFound) {
			t.Fatalf("%v on an absent key: %v, want ErrKeyNotFound", p, err)
		}
	}
	if _, err := put(&pb.PutRequest{Key: []byte("k"), Lease: 42}); !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("put with an unknown lease: %v, want ErrLeaseNotFound", err)
	}
	if s.sh.Rev() != 4 {
		t.Fatalf("failed puts changed the revision to %d", s.sh.Rev())
	}
}

func TestCompaction(t *testing.T) {
	s := newTestShard(t)
	s.put("a", "1") // 2
	s.put("a", "2") // 3
	s.put("b", "1") // 4
	s.del("b", "")  // 5
	s.put("a", "3") // 6
	s.put("c", "1") // 7

	s.compact(5)
	if s.sh.CompactRev() != 5 {
		t.Fatalf("compacted revision %d, want 5", s.sh.CompactRev())
	}
	for _, rev := range []int64{2, 4} {
		if _, err := s.rangeReq(&pb.RangeRequest{Key: []byte("a"), Revision: rev}); !errors.Is(err, ErrCompacted) {
			t.Fatalf("read at %d after Compact(5): %v, want ErrCompacted", rev, err)
		}
	}
	cases := map[int64]string{5: "a=2", 6: "a=3", 7: "a=3 c=1"}
	for rev, want := range cases {
		resp, err := s.rangeReq(&pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z"), Revision: rev})
		if err != nil {
			t.Fatal(err)
		}
		if got := keysOf(resp.Kvs); got != want {
			t.Fatalf("read at %d after Compact(5): %q, want %q", rev, got, want)
		}
	}
	// What remains physically: a@3 (newest at or below 5), a@6, c@7. b's
	// history ends in a tombstone at or below 5 and is gone.
	it, _ := s.store.db.NewIter(&pebble.IterOptions{LowerBound: []byte{keyspaceData}, UpperBound: []byte{keyspaceData + 1}})
	var left []string
	for ok := it.First(); ok; ok = it.Next() {
		k, r, _ := decodeDataKey(it.Key())
		left = append(left, fmt.Sprintf("%s@%d", k, r.Main))
	}
	it.Close()
	if fmt.Sprint(left) != "[a@6 a@3 c@7]" {
		t.Fatalf("versions left after Compact(5): %v", left)
	}
	after, _, err := s.sh.HashKV(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.sh.HashKV(context.Background(), 3); !errors.Is(err, ErrCompacted) {
		t.Fatalf("HashKV below the compacted revision: %v", err)
	}
	if after.CompactRevision != 5 || after.Revision != 7 {
		t.Fatalf("HashKV after compaction: %+v", after)
	}
}

// TestCompactionInTheWritesBatch checks a compaction applied in the same
// batch as the writes it compacts, as when one apply hands several Raft
// entries to one Writer: the batch's own change log must be compacted too.
func TestCompactionInTheWritesBatch(t *testing.T) {
	s := newTestShard(t)
	w := s.sh.NewWriter()
	for i, op := range []*pb.RequestOp{putOp("a", "1"), putOp("a", "2"), putOp("b", "1")} {
		if _, _, err := w.ApplyTxn(context.Background(), int64(i+2), txnOf(op), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Compact(3); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(1); err != nil {
		t.Fatal(err)
	}

	var left []string
	it, _ := s.store.db.NewIter(&pebble.IterOptions{LowerBound: []byte{keyspaceChange}, UpperBound: []byte{keyspaceData + 1}})
	for ok := it.First(); ok; ok = it.Next() {
		if k, r, ok := decodeDataKey(it.Key()); ok {
			left = append(left, fmt.Sprintf("%s@%d", k, r.Main))
		} else if r, ok := decodeChangeKey(it.Key()); ok {
			left = append(left, fmt.Sprintf("change@%d", r.Main))
		}
	}
	it.Close()
	if fmt.Sprint(left) != "[change@3 change@4 a@3 b@4]" {
		t.Fatalf("keys left after Compact(3) in the writes' batch: %v", left)
	}
	evs, _, err := s.sh.Changes(context.Background(), 3, 4, 100)
	if got := describeEvents(evs); err != nil || got != "PUT a=2@3 c2 v2; PUT b=1@4 c4 v1" {
		t.Fatalf("changes after Compact(3): %s %v", got, err)
	}
	if _, _, err := s.sh.Changes(context.Background(), 2, 4, 100); !errors.Is(err, ErrCompacted) {
		t.Fatalf("changes below the compacted revision: %v", err)
	}
}

// TestHashKVDependsOnHistory checks that equal histories hash equally and
// that a different value or an extra revision changes the hash.
func TestHashKVDependsOnHistory(t *testing.T) {
	build := func(lastValue string) *testShard {
		s := newTestShard(t)
		s.put("a", "1")
		s.put("b", "2")
		s.del("a", "")
		s.put("c", lastValue)
		return s
	}
	hash := func(s *testShard, rev int64) uint32 {
		h, _, err := s.sh.HashKV(context.Background(), rev)
		if err != nil {
			t.Fatal(err)
		}
		return h.Hash
	}
	s1, s2, s3 := build("x"), build("x"), build("y")
	if hash(s1, 0) != hash(s2, 0) {
		t.Fatal("equal histories must hash equally")
	}
	if hash(s1, 0) == hash(s3, 0) {
		t.Fatal("different values must hash differently")
	}
	if hash(s1, 4) != hash(s3, 4) {
		t.Fatal("histories equal up to revision 4 must hash equally at 4")
	}
	if _, _, err := s1.sh.HashKV(context.Background(), 99); !errors.Is(err, ErrFutureRev) {
		t.Fatalf("HashKV at a future revision: %v", err)
	}
}

// TestSnapshotRoundTrip checks that a shard recovered from another's
// snapshot answers every read and hash the same, and that what the
// recovering shard held before is gone.
func TestSnapshotRoundTrip(t *testing.T) {
	src := newTestShard(t)
	for i := 0; i < 50; i++ {
		src.put(fmt.Sprintf("k%02d", i%17), fmt.Sprint(i))
	}
	src.del("k03", "k07")
	src.compact(20)
	src.put("k99", "last")

	dst := newTestShard(t)
	dst.put("stale", "gone after recovery")

	snap := src.store.db.NewSnapshot()
	var buf bytes.Buffer
	if err := src.sh.WriteSnapshot(snap, &buf); err != nil {
		t.Fatal(err)
	}
	snap.Close()
	if err := dst.sh.RecoverSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	if dst.sh.Rev() != src.sh.Rev() || dst.sh.CompactRev() != 20 || dst.sh.AppliedIndex() != src.sh.AppliedIndex() {
		t.Fatalf("recovered rev=%d compact=%d applied=%d; source rev=%d applied=%d",
			dst.sh.Rev(), dst.sh.CompactRev(), dst.sh.AppliedIndex(), src.sh.Rev(), src.sh.AppliedIndex())
	}
	for _, rev := range []int64{0, 20, 30, src.sh.Rev()} {
		req := &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: rev}
		a, err1 := src.rangeReq(req)
		b, err2 := dst.rangeReq(req)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if keysOf(a.Kvs) != keysOf(b.Kvs) || a.Count != b.Count {
			t.Fatalf("at %d: source %q, recovered %q", rev, keysOf(a.Kvs), keysOf(b.Kvs))
		}
	}
	h1, _, _ := src.sh.HashKV(context.Background(), 0)
	h2, _, _ := dst.sh.HashKV(context.Background(), 0)
	if h1 != h2 {
		t.Fatalf("hash after recovery %+v, source %+v", h2, h1)
	}
	if resp, _ := dst.rangeReq(&pb.RangeRequest{Key: []byte("stale")}); len(resp.Kvs) != 0 {
		t.Fatal("recovery must drop the shard's previous keys")
	}
	if err := dst.sh.RecoverSnapshot(bytes.NewReader([]byte{5, 'a'})); err == nil {
		t.Fatal("a truncated snapshot must fail")
	}
}

// TestIgnoreValueAfterDeleteFails covers a transaction etcd crashes on: a
// delete to the end of the key space (which etcd's overlap check reads as
// covering nothing) followed by a put with ignore_value of a key it deleted.
// Basalt rejects it before writing anything.
func TestIgnoreValueAfterDeleteFails(t *testing.T) {
	s := newTestShard(t)
	s.put("zz", "v")
	rt := &pb.TxnRequest{Success: []*pb.RequestOp{
		putOp("k3", "x"),
		{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("k"), RangeEnd: []byte{0}}}},
		{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("zz"), IgnoreValue: true}}},
	}}
	if _, err := s.txn(rt); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("got %v, want ErrKeyNotFound", err)
	}
	resp, _ := s.rangeReq(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
	if keysOf(resp.Kvs) != "zz=v" || s.sh.Rev() != 2 {
		t.Fatalf("a rejected txn changed the store: %q at revision %d", keysOf(resp.Kvs), s.sh.Rev())
	}
}

// TestPutsAfterReopenKeepHistory: a put after the store is reopened (the
// cache of latest versions rebuilt from disk) or with the cache cold (every
// lookup from Pebble) continues each key's version and create revision.
func TestPutsAfterReopenKeepHistory(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sh, _ := st.OpenShard(2, nil, nil)
	s := &testShard{t: t, store: st, sh: sh}
	s.put("a", "1") // 2
	s.put("a", "2") // 3
	s.put("b", "1") // 4
	s.del("b", "")  // 5
	// Keys longer than the cache holds in place take its other map.
	long := strings.Repeat("k", maxInlineKey+1)
	s.put(long, "1") // 6
	s.put(long, "2") // 7
	if err := st.Sync(); err != nil {
		t.Fatal(err)
	}
	st.Close()

	st, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sh, _ = st.OpenShard(2, nil, nil)
	if !sh.latest.complete {
		t.Fatal("a small shard's cache of latest versions must be complete after opening")
	}
	s = &testShard{t: t, store: st, sh: sh, index: sh.AppliedIndex()}
	check := func(key string, create, ver int64) {
		t.Helper()
		resp, _ := s.rangeReq(&pb.RangeRequest{Key: []byte(key)})
		if len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != create || resp.Kvs[0].Version != ver {
			t.Fatalf("%s: %v, want create %d version %d", key, resp.Kvs, create, ver)
		}
	}
	s.put("a", "3") // 8
	check("a", 2, 3)
	s.put("b", "again") // 9: a new generation
	check("b", 9, 1)
	s.put(long, "3") // 10
	check(long, 6, 3)

	// Cold cache: lookups go to Pebble.
	sh.latest.m, sh.latest.complete = versionMap{}, false
	s.put("a", "4") // 11
	check("a", 2, 4)
	s.put("c", "new") // 12
	check("c", 12, 1)
	s.put(long, "4") // 13
	check(long, 6, 4)
}

// TestVersionMap: keys held in place and keys in the map of strings are
// told apart exactly, at the length where one gives way to the other too.
func TestVersionMap(t *testing.T) {
	keys := []string{"", "a", "a\x00", "\x00", strings.Repeat("x", maxInlineKey), strings.Repeat("x", maxInlineKey+1), strings.Repeat("x", maxInlineKey-1) + "\x00"}
	var m versionMap
	for i, k := range keys {
		m.set([]byte(k), latestVersion{exists: true, ver: int64(i + 1)})
	}
	if m.len() != len(keys) {
		t.Fatalf("%d entries, want %d", m.len(), len(keys))
	}
	for i, k := range keys {
		if v, ok := m.get([]byte(k)); !ok || v.ver != int64(i+1) {
			t.Fatalf("%q: %v %v, want version %d", k, v, ok, i+1)
		}
	}
	if _, ok := m.get([]byte("b")); ok {
		t.Fatal("found a key never set")
	}
	m.dropSome(2)
	if m.len() != len(keys)-2 {
		t.Fatalf("after dropping 2: %d entries", m.len())
	}
	m.delete([]byte(keys[5])) // a key in the map of strings, if not dropped
	m.delete([]byte(keys[1]))
	if _, ok := m.get([]byte(keys[5])); ok {
		t.Fatalf("%q found after delete", keys[5])
	}
}

// TestLatestCacheSetAndForget: the cache stays complete until it is full or
// forgets keys, and then reports what it lacks as unknown.
func TestLatestCacheSetAndForget(t *testing.T) {
	c := latestCache{complete: true}
	for i := range latestCacheSize {
		c.set(fmt.Appendf(nil, "k%d", i), latestVersion{exists: true, ver: 1})
	}
	if _, known := c.get([]byte("absent")); c.m.len() != latestCacheSize || !known {
		t.Fatalf("full cache: %d entries, absent key known=%v (want a complete cache)", c.m.len(), known)
	}
	c.set([]byte("k7"), latestVersion{exists: true, ver: 2}) // replaces, drops nothing
	if v, known := c.get([]byte("k7")); !known || v.ver != 2 || !c.complete {
		t.Fatalf("k7 after a second version: %v %v (complete %v)", v, known, c.complete)
	}
	c.set([]byte("new"), latestVersion{exists: true, ver: 1})
	if _, known := c.get([]byte("absent")); c.m.len() != latestCacheSize || known {
		t.Fatalf("past full: %d entries, absent key known=%v (want an incomplete cache)", c.m.len(), known)
	}

	c = latestCache{complete: true}
	c.set([]byte("a"), latestVersion{exists: true, ver: 1})
	c.set([]byte("b"), latestVersion{exists: true, ver: 1})
	c.forget([][]byte{[]byte("a")})
	if _, known := c.get([]byte("a")); known || c.complete {
		t.Fatal("a forgotten key is still known")
	}
	if v, known := c.get([]byte("b")); !known || v.ver != 1 {
		t.Fatalf("b after forgetting a: %v %v", v, known)
	}
}

// TestAbortedWritesLeaveNoVersions: a batch that does not commit leaves
// nothing of its writes behind, in the store or in the shard's cache of
// latest versions, so the next put of the key counts from what committed.
func TestAbortedWritesLeaveNoVersions(t *testing.T) {
	s := newTestShard(t)
	s.put("k", "1") // 2
	w := s.sh.NewWriter()
	for i, v := range []string{"2", "3"} {
		if _, _, err := w.ApplyTxn(context.Background(), int64(3+i), txnOf(putOp("k", v), putOp("new", v)), nil); err != nil {
			t.Fatal(err)
		}
	}
	w.Abort()
	s.put("k", "4")   // 3
	s.put("new", "4") // 4
	got, err := s.rangeReq(&pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z")})
	if err != nil {
		t.Fatal(err)
	}
	k, n := got.Kvs[0], got.Kvs[1]
	if string(k.Key) != "k" || k.Version != 2 || k.CreateRevision != 2 || n.Version != 1 || n.CreateRevision != 4 {
		t.Fatalf("after an aborted batch: %v", got.Kvs)
	}
}

// TestApplyTxnWritesMatchesApplyTxn applies the same transactions through
// ApplyTxn (the proposer's path) and ApplyTxnWrites (every other replica's)
// on two shards: each must change the same, fail the same way, and leave
// the same history.
func TestApplyTxnWritesMatchesApplyTxn(t *testing.T) {
	answering, quiet := newTestShard(t), newTestShard(t)
	put := func(p *pb.PutRequest) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: p}}
	}
	del := func(d *pb.DeleteRangeRequest) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: d}}
	}
	valueIs := func(key, value string) *pb.Compare {
		return &pb.Compare{Key: []byte(key), Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Value{Value: []byte(value)}}
	}
	nested := func(rt *pb.TxnRequest) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: rt}}
	}
	txns := []*pb.TxnRequest{
		txnOf(putOp("a", "1")),
		txnOf(put(&pb.PutRequest{Key: []byte("b"), Value: []byte("1"), Lease: 7})),
		txnOf(put(&pb.PutRequest{Key: []byte("a"), Value: []byte("2"), PrevKv: true})),
		txnOf(put(&pb.PutRequest{Key: []byte("a"), IgnoreValue: true, Lease: 9})),
		txnOf(put(&pb.PutRequest{Key: []byte("b"), Value: []byte("3"), IgnoreLease: true})),
		txnOf(put(&pb.PutRequest{Key: []byte("absent"), IgnoreValue: true})), // ErrKeyNotFound
		txnOf(put(&pb.PutRequest{Key: []byte("absent"), IgnoreLease: true})), // ErrKeyNotFound
		txnOf(putOp("c", "1"), putOp("d", "1"), rangeOp(&pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z")})),
		txnOf(del(&pb.DeleteRangeRequest{Key: []byte("c"), RangeEnd: []byte("e"), PrevKv: true})),
		txnOf(delOp("nothing", "")),                        // changes nothing
		txnOf(rangeOp(&pb.RangeRequest{Key: []byte("a")})), // changes nothing
		{Compare: []*pb.Compare{valueIs("a", "2")}, Success: []*pb.RequestOp{putOp("e", "yes")}, Failure: []*pb.RequestOp{putOp("e", "no")}},
		{Compare: []*pb.Compare{valueIs("a", "1")}, Success: []*pb.RequestOp{putOp("f", "yes")}, Failure: []*pb.RequestOp{
			rangeOp(&pb.RangeRequest{Key: []byte("e")}),
			nested(&pb.TxnRequest{Compare: []*pb.Compare{valueIs("e", "yes")}, Success: []*pb.RequestOp{
				put(&pb.PutRequest{Key: []byte("e"), IgnoreValue: true, PrevKv: true}),
				delOp("a", ""),
			}}),
			putOp("f", "no"),
		}},
		txnOf(del(&pb.DeleteRangeRequest{Key: []byte("f"), RangeEnd: []byte{0}, PrevKv: true})), // f and every key after it
		txnOf(putOp("g", "1")),
	}
	// Three batches, as apply makes them: later transactions of a batch
	// find the versions earlier ones wrote.
	var wa, wq *Writer
	batchEnds := map[int]bool{6: true, 12: true, len(txns) - 1: true}
	for i, rt := range txns {
		if wa == nil {
			wa, wq = answering.sh.NewWriter(), quiet.sh.NewWriter()
		}
		rev := wa.Rev() + 1
		resp, changedA, errA := wa.ApplyTxn(context.Background(), rev, rt, AllowAllLeases)
		changedQ, errQ := wq.ApplyTxnWrites(context.Background(), rev, rt, AllowAllLeases)
		if changedA != changedQ || !errors.Is(errQ, errA) && fmt.Sprint(errA) != fmt.Sprint(errQ) {
			t.Fatalf("txn %d: ApplyTxn changed=%v err=%v (%v), ApplyTxnWrites changed=%v err=%v", i, changedA, errA, resp, changedQ, errQ)
		}
		if batchEnds[i] {
			if err := wa.Commit(uint64(i + 1)); err != nil {
				t.Fatal(err)
			}
			if err := wq.Commit(uint64(i + 1)); err != nil {
				t.Fatal(err)
			}
			wa, wq = nil, nil
		}
	}

	if answering.sh.Rev() != 12 || quiet.sh.Rev() != answering.sh.Rev() {
		t.Fatalf("revisions: %d answering, %d quiet, want 12", answering.sh.Rev(), quiet.sh.Rev())
	}
	ha, _, err := answering.sh.HashKV(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	hq, _, err := quiet.sh.HashKV(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if ha.Hash != hq.Hash {
		t.Fatalf("HashKV differs: %d answering, %d quiet", ha.Hash, hq.Hash)
	}
	evA, _, errA := answering.sh.Changes(context.Background(), 1, 12, 100)
	evQ, _, errQ := quiet.sh.Changes(context.Background(), 1, 12, 100)
	if errA != nil || errQ != nil || describeEvents(evA) != describeEvents(evQ) {
		t.Fatalf("change logs differ:\n%s %v\n%s %v", describeEvents(evA), errA, describeEvents(evQ), errQ)
	}
	got, _ := ExecuteRange(context.Background(), quiet.sh.View(), &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z")})
	if keysOf(got.Kvs) != "b=3 e=yes g=1" || got.Kvs[0].Lease != 7 {
		t.Fatalf("quiet replica's keys: %v", got.Kvs)
	}
}
