package router

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/lni/dragonboat/v4"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/shard"
	"github.com/basaltdb/basalt/txncoord"
)

func put(k string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k)}}}
}

func del(k, end string) *pb.RequestOp {
	d := &pb.DeleteRangeRequest{Key: []byte(k)}
	if end != "" {
		d.RangeEnd = []byte(end)
	}
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: d}}
}

func nested(then, els []*pb.RequestOp) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Success: then, Failure: els}}}
}

func TestCheckIntervals(t *testing.T) {
	cases := []struct {
		name string
		ops  []*pb.RequestOp
		dup  bool
	}{
		{"distinct puts", []*pb.RequestOp{put("a"), put("b")}, false},
		{"same key twice", []*pb.RequestOp{put("a"), put("a")}, true},
		{"put inside a delete", []*pb.RequestOp{put("b"), del("a", "c")}, true},
		{"put at a delete's end", []*pb.RequestOp{put("c"), del("a", "c")}, false},
		{"two deletes overlap", []*pb.RequestOp{del("a", "c"), del("b", "d")}, false},
		{"nested put under a delete", []*pb.RequestOp{del("a", "c"), nested([]*pb.RequestOp{put("b")}, nil)}, true},
		{"then and else put the same key", []*pb.RequestOp{nested([]*pb.RequestOp{put("a")}, []*pb.RequestOp{put("a")})}, false},
		{"outer put and nested else put", []*pb.RequestOp{put("a"), nested(nil, []*pb.RequestOp{put("a")})}, true},
		{"nested delete covers an outer put", []*pb.RequestOp{put("b"), nested([]*pb.RequestOp{del("a", "c")}, nil)}, true},
		{`delete to "\x00" is not an overlap to etcd`, []*pb.RequestOp{del("a", "\x00"), put("b")}, false},
	}
	for _, c := range cases {
		_, _, err := checkIntervals(c.ops)
		if c.dup != (err != nil) {
			t.Errorf("%s: err = %v, want duplicate=%v", c.name, err, c.dup)
		}
		if err != nil && !errors.Is(err, rpctypes.ErrGRPCDuplicateKey) {
			t.Errorf("%s: %v, want ErrGRPCDuplicateKey", c.name, err)
		}
	}
}

func TestCheckTxnRequest(t *testing.T) {
	ops := func(n int) []*pb.RequestOp {
		out := make([]*pb.RequestOp, n)
		for i := range out {
			out[i] = put(fmt.Sprint(i))
		}
		return out
	}
	cases := []struct {
		name string
		txn  *pb.TxnRequest
		want error
	}{
		{"128 ops", &pb.TxnRequest{Success: ops(128), Failure: ops(128)}, nil},
		{"129 ops", &pb.TxnRequest{Success: ops(129)}, rpctypes.ErrGRPCTooManyOps},
		{"nested counts against the rest", &pb.TxnRequest{Success: append(ops(100), nested(ops(28), nil))}, rpctypes.ErrGRPCTooManyOps},
		{"nested within the rest", &pb.TxnRequest{Success: append(ops(100), nested(ops(27), nil))}, nil},
		{"empty compare key", &pb.TxnRequest{Compare: []*pb.Compare{{}}}, rpctypes.ErrGRPCEmptyKey},
		{"empty op", &pb.TxnRequest{Success: []*pb.RequestOp{{}}}, rpctypes.ErrGRPCKeyNotFound},
		{"ignore_value with a value", &pb.TxnRequest{Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("k"), Value: []byte("v"), IgnoreValue: true}}}}}, rpctypes.ErrGRPCValueProvided},
		{"bad sort", &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("k"), SortOrder: 5}}}}}, rpctypes.ErrGRPCInvalidSortOption},
	}
	for _, c := range cases {
		if err := checkTxnRequest(c.txn, 128); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

func TestCheckRequestSize(t *testing.T) {
	limit := 1536 * 1024
	small := &pb.PutRequest{Key: []byte("k"), Value: make([]byte, limit-100)}
	big := &pb.PutRequest{Key: []byte("k"), Value: make([]byte, limit)}
	if err := checkRequestSize(small, limit); err != nil {
		t.Fatalf("a request under the limit: %v", err)
	}
	if err := checkRequestSize(big, limit); !errors.Is(err, errRequestTooLarge) {
		t.Fatalf("a request over the limit: %v", err)
	}
}

// TestErrorTable checks that each internal error reaches the client as
// etcd's gRPC error, code and message.
func TestErrorTable(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		err  error
		want error
	}{
		{mvcc.ErrCompacted, rpctypes.ErrGRPCCompacted},
		{fmt.Errorf("wrapped: %w", mvcc.ErrFutureRev), rpctypes.ErrGRPCFutureRev},
		{mvcc.ErrKeyNotFound, rpctypes.ErrGRPCKeyNotFound},
		{mvcc.ErrLeaseNotFound, rpctypes.ErrGRPCLeaseNotFound},
		{errRequestTooLarge, rpctypes.ErrGRPCRequestTooLarge},
		{shard.ErrNotLeader, rpctypes.ErrGRPCNoLeader},
		{txncoord.ErrTSONotReady, rpctypes.ErrGRPCNoLeader},
		{dragonboat.ErrTimeout, rpctypes.ErrGRPCTimeout},
		{context.DeadlineExceeded, rpctypes.ErrGRPCTimeout},
		{shard.ErrStopped, rpctypes.ErrGRPCStopped},
	}
	for _, c := range cases {
		got := status.Convert(toGRPCError(ctx, c.err))
		want := status.Convert(c.want)
		if got.Code() != want.Code() || got.Message() != want.Message() {
			t.Errorf("%v → %v %q, want %v %q", c.err, got.Code(), got.Message(), want.Code(), want.Message())
		}
	}
	if unknown := status.Convert(toGRPCError(ctx, errors.New("boom"))); unknown.Code() != codes.Unknown || unknown.Message() != "boom" {
		t.Errorf("an unmapped error: %v, want Unknown as etcd answers", unknown)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if got := status.Convert(toGRPCError(cancelled, shard.ErrNotLeader)); got.Code() != codes.Canceled {
		t.Errorf("a request the client cancelled: %v", got)
	}
}
