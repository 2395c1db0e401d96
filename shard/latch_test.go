package shard

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

func TestSpanOverlaps(t *testing.T) {
	pt := func(k string) span { return span{start: []byte(k)} }
	rg := func(a, b string) span { return span{start: []byte(a), end: []byte(b)} }
	from := func(a string) span { return span{start: []byte(a), end: []byte{}} }
	cases := []struct {
		a, b span
		want bool
	}{
		{pt("a"), pt("a"), true},
		{pt("a"), pt("b"), false},
		{pt("b"), rg("a", "c"), true},
		{pt("c"), rg("a", "c"), false},
		{pt("a"), rg("a", "c"), true},
		{rg("a", "c"), rg("b", "d"), true},
		{rg("a", "b"), rg("b", "c"), false},
		{rg("c", "a"), rg("a", "z"), false}, // an empty range
		{from("m"), pt("z"), true},
		{from("m"), pt("a"), false},
		{from("m"), rg("a", "n"), true},
		{from("m"), from("a"), true},
		{rg("a", "b"), from("b"), false},
	}
	for _, c := range cases {
		if got := c.a.overlaps(c.b); got != c.want {
			t.Errorf("%q-%q overlaps %q-%q = %v, want %v", c.a.start, c.a.end, c.b.start, c.b.end, got, c.want)
		}
		if got := c.b.overlaps(c.a); got != c.want {
			t.Errorf("overlap is not symmetric for %q-%q, %q-%q", c.a.start, c.a.end, c.b.start, c.b.end)
		}
	}
}

func TestLatchSetCounts(t *testing.T) {
	l := newLatchSet()
	a := []span{{start: []byte("a")}}
	r := []span{{start: []byte("m"), end: []byte("p")}}
	l.add(a)
	l.add(a)
	l.add(r)
	probe := func(k string) bool { return l.overlaps([]span{{start: []byte(k)}}) }
	if !probe("a") || !probe("n") || probe("b") {
		t.Fatal("latches must cover a and [m, p) only")
	}
	if !l.overlaps([]span{{start: []byte("0"), end: []byte("b")}}) {
		t.Fatal("a range over a held point must overlap")
	}
	l.remove(a)
	if !probe("a") {
		t.Fatal("a was held twice and released once")
	}
	l.remove(a)
	l.remove(r)
	if !l.empty() {
		t.Fatalf("latches left after release: %+v", l)
	}
}

func TestShapeOf(t *testing.T) {
	put := func(k string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k)}}}
	}
	cases := []struct {
		name        string
		txn         *pb.TxnRequest
		conditional bool
	}{
		{"plain put", &pb.TxnRequest{Success: []*pb.RequestOp{put("a")}}, false},
		{"puts in failure only", &pb.TxnRequest{Failure: []*pb.RequestOp{put("a")}}, true},
		{"empty", &pb.TxnRequest{}, true},
		{"compare", &pb.TxnRequest{Compare: []*pb.Compare{{Key: []byte("a")}}, Success: []*pb.RequestOp{put("a")}}, true},
		{"delete", &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("a")}}}}}, true},
		{"ignore value", &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("a"), IgnoreValue: true}}}}}, true},
		{"lease", &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("a"), Lease: 5}}}}}, true},
		{"range at revision", &pb.TxnRequest{Success: []*pb.RequestOp{put("a"), {Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), Revision: 3}}}}}, true},
		{"nested put", &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Success: []*pb.RequestOp{put("b")}}}}}}, false},
		{"nested compare", &pb.TxnRequest{Success: []*pb.RequestOp{put("a"), {Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Compare: []*pb.Compare{{Key: []byte("x")}}}}}}}, true},
	}
	for _, c := range cases {
		if got := shapeOf(c.txn).conditional; got != c.conditional {
			t.Errorf("%s: conditional = %v, want %v", c.name, got, c.conditional)
		}
	}
	s := shapeOf(&pb.TxnRequest{
		Compare: []*pb.Compare{{Key: []byte("c"), RangeEnd: []byte("d")}},
		Success: []*pb.RequestOp{put("p")},
		Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("x"), RangeEnd: []byte{0}}}}},
	})
	if len(s.reads) != 2 || len(s.writes) != 2 {
		t.Fatalf("reads %d writes %d, want compare+delete read, put+delete written", len(s.reads), len(s.writes))
	}
	if !s.reads[1].overlaps(span{start: []byte("zzz")}) {
		t.Fatal(`a delete to "\x00" must cover every key after its start`)
	}
}
