package mvcc

import (
	"context"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// Transactions planned over two shards and applied shard by shard leave
// the same responses, history and change log (sub revisions included) as
// the same transactions applied to one shard.
func TestPlanAcrossShardsMatchesOneShard(t *testing.T) {
	ctx := context.Background()
	one, two := newTestShard(t), newTestShard(t)
	for _, s := range []*testShard{one, two} {
		for _, k := range []string{"a", "b", "c", "n", "p", "z"} {
			s.put(k, "1")
		}
	}
	child := two.split("m")
	shards := []*Shard{two.sh, child}

	put := func(k, v string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte(v), PrevKv: true}}}
	}
	rng := func(k, end string, count bool) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(k), RangeEnd: []byte(end), CountOnly: count}}}
	}
	txns := []*pb.TxnRequest{
		{ // ops interleave the shards; reads see the transaction's writes
			Compare: []*pb.Compare{{Key: []byte("a"), Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Value{Value: []byte("1")}}},
			Success: []*pb.RequestOp{
				put("z", "2"), put("a", "2"),
				{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("b"), RangeEnd: []byte("o"), PrevKv: true}}},
				rng("a", "zz", false), put("n", "2"),
			},
		},
		{ // sees the previous transaction of the plan
			Compare: []*pb.Compare{{Key: []byte("n"), Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Version{Version: 1}}},
			Success: []*pb.RequestOp{put("c", "3")},
			Failure: []*pb.RequestOp{rng("a", "", true), put("p", "3"), put("b", "3")},
		},
	}

	start := one.sh.Rev()
	plan := NewPlanner(shards, start)
	defer plan.Close()
	writes := map[uint64][]*ShardWrites{}
	for i, txn := range txns {
		want, err := one.txn(txn)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := plan.Read(ctx, txn, nil); err != ErrTxnWrites {
			t.Fatalf("txn %d: Read = %v, want ErrTxnWrites", i, err)
		}
		got, w, err := plan.Plan(ctx, start+int64(i)+1, txn, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("txn %d: planned response\n%v\nwant\n%v", i, got, want)
		}
		for id, sw := range w {
			writes[id] = append(writes[id], sw)
		}
	}
	if _, _, err := plan.Plan(ctx, start+1, txns[0], nil); err == nil {
		t.Fatal("a plan at a revision not above the plan's must fail")
	}
	// Each shard applies its part, one batch, in revision order.
	for _, sh := range shards {
		w := sh.NewWriter()
		for i, sw := range writes[sh.ID()] {
			if err := w.ApplyWrites(ctx, start+int64(i)+1, sw.Subs, sw.Txn); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Commit(100); err != nil {
			t.Fatal(err)
		}
	}
	for rev := start; rev <= start+2; rev++ {
		view, err := ViewAcross(start+2, shards)
		if err != nil {
			t.Fatal(err)
		}
		req := &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: rev}
		got, err := ExecuteRange(ctx, view, req)
		if err != nil {
			t.Fatal(err)
		}
		want, err := ExecuteRange(ctx, one.sh.View(), req)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("at revision %d across shards\n%v\nwant\n%v", rev, got, want)
		}
	}
	gotEvs, gotSubs, _, err := ChangesIn(ctx, shards, start+1, start+2, 10)
	if err != nil {
		t.Fatal(err)
	}
	wantEvs, wantSubs, _, err := ChangesIn(ctx, []*Shard{one.sh}, start+1, start+2, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(gotEvs) != len(wantEvs) {
		t.Fatalf("%d events across shards, want %d", len(gotEvs), len(wantEvs))
	}
	for i := range gotEvs {
		if !proto.Equal(gotEvs[i], wantEvs[i]) || gotSubs[i] != wantSubs[i] {
			t.Fatalf("event %d: %v sub %d, want %v sub %d", i, gotEvs[i], gotSubs[i], wantEvs[i], wantSubs[i])
		}
	}

	// Bad input: sub revisions that do not match the operations.
	w := child.NewWriter()
	defer w.Abort()
	if err := w.ApplyWrites(ctx, start+3, []int64{0, 1}, &pb.TxnRequest{Success: []*pb.RequestOp{put("x", "1")}}); err == nil {
		t.Fatal("ApplyWrites with two sub revisions for one operation must fail")
	}
	if err := w.ApplyWrites(ctx, start, []int64{0}, &pb.TxnRequest{Success: []*pb.RequestOp{put("x", "1")}}); err == nil {
		t.Fatal("ApplyWrites below the shard's revision must fail")
	}
}
