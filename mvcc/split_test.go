package mvcc

import (
	"context"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// split splits the test shard at key into child 3 and opens the child.
func (s *testShard) split(key string) *Shard {
	s.t.Helper()
	w := s.sh.NewWriter()
	if err := w.Split([]byte(key), 3); err != nil {
		s.t.Fatal(err)
	}
	s.index++
	if err := w.Commit(s.index); err != nil {
		s.t.Fatal(err)
	}
	child, err := s.store.OpenShard(3, nil, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	return child
}

func TestSplitHandsOverKeysWithTheirHistory(t *testing.T) {
	s := newTestShard(t)
	for _, k := range []string{"a", "b", "c", "d"} {
		s.put(k, "1")
	}
	s.put("c", "2")
	s.compact(3)
	rev := s.sh.Rev()
	child := s.split("c")

	if start, end := s.sh.Span(); string(start) != "" || string(end) != "c" {
		t.Fatalf("parent span [%q, %q), want [\"\", \"c\")", start, end)
	}
	if start, end := child.Span(); string(start) != "c" || len(end) != 0 {
		t.Fatalf("child span [%q, %q), want [\"c\", +inf)", start, end)
	}
	if child.Rev() != rev || child.CompactRev() != 3 || child.AppliedIndex() != 0 {
		t.Fatalf("child rev %d compact %d applied %d, want %d 3 0", child.Rev(), child.CompactRev(), child.AppliedIndex(), rev)
	}
	count := func(sh *Shard) int {
		res, err := sh.View().Range(context.Background(), []byte{}, []byte{}, RangeOptions{CountOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		return res.Count
	}
	if p, c := count(s.sh), count(child); p != 2 || c != 2 {
		t.Fatalf("parent has %d keys, child %d; want 2 and 2", p, c)
	}
	// The child reads the history it took over.
	resp, err := ExecuteRange(context.Background(), child.View(), &pb.RangeRequest{Key: []byte("c"), Revision: 4})
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "1" {
		t.Fatalf("child read of c at 4: %v, %v", resp, err)
	}
	if _, err := ExecuteRange(context.Background(), child.View(), &pb.RangeRequest{Key: []byte("c"), Revision: 2}); err != ErrCompacted {
		t.Fatalf("child read below the compaction: %v, want ErrCompacted", err)
	}
	// Changes and lease entries follow the spans.
	evs, _, err := child.Changes(context.Background(), 3, rev, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if !child.Contains(ev.Kv.Key) {
			t.Fatalf("child change of %q, outside its span", ev.Kv.Key)
		}
	}
	if len(evs) != 3 { // c, d, c again
		t.Fatalf("child changes %v, want 3", evs)
	}
	// A view across both shards reads as one.
	view, err := ViewAcross(rev, []*Shard{s.sh, child})
	if err != nil {
		t.Fatal(err)
	}
	all, err := ExecuteRange(context.Background(), view, &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte{0}})
	if err != nil || keysOf(all.Kvs) != "a=1 b=1 c=2 d=1" {
		t.Fatalf("range across shards: %v, %v", all, err)
	}
	if _, err := ViewAcross(rev, []*Shard{child, s.sh}); err != ErrNotAdjacent {
		t.Fatalf("view of shards out of order: %v, want ErrNotAdjacent", err)
	}
}

func TestSplitRejectsBadKeys(t *testing.T) {
	s := newTestShard(t)
	s.put("a", "1")
	w := s.sh.NewWriter()
	defer w.Abort()
	if err := w.Split(nil, 3); err != ErrBadSplitKey {
		t.Fatalf("split at the shard's start: %v, want ErrBadSplitKey", err)
	}
	if err := w.Split([]byte("m"), 3); err != nil {
		t.Fatal(err)
	}
	if err := w.Split([]byte("n"), 4); err != ErrBadSplitKey {
		t.Fatalf("split past the new end: %v, want ErrBadSplitKey", err)
	}
}

func TestContainsRange(t *testing.T) {
	s := &keySpan{start: []byte("b"), end: []byte("d")}
	for _, c := range []struct {
		key, end string
		nilEnd   bool
		want     bool
	}{
		{key: "b", nilEnd: true, want: true},
		{key: "d", nilEnd: true, want: false},
		{key: "b", end: "d", want: true},
		{key: "b", end: "e", want: false},
		{key: "a", end: "c", want: false},
		{key: "c", end: "\x00", want: false},
		{key: "c", end: "a", want: true}, // holds no key
	} {
		var end []byte
		if !c.nilEnd {
			end = []byte(c.end)
		}
		if got := s.containsRange([]byte(c.key), end); got != c.want {
			t.Errorf("[%q, %q) in [b, d): %v, want %v", c.key, c.end, got, c.want)
		}
	}
	open := &keySpan{start: []byte("b")}
	if !open.containsRange([]byte("c"), []byte{0}) {
		t.Error("[c, +inf) is in [b, +inf)")
	}
}
