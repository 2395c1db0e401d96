package difftest

import (
	"context"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// Builders of the calls the tests send.

func describeReq(kind string, m proto.Message) string {
	s := prototext.MarshalOptions{}.Format(m)
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return fmt.Sprintf("%s{%s}", kind, s)
}

// Put sends a PutRequest.
func Put(r *pb.PutRequest) Call {
	return Call{Name: describeReq("Put", r), Do: func(ctx context.Context, t *Target) (proto.Message, error) {
		return t.KV.Put(ctx, r)
	}}
}

// Range sends a RangeRequest.
func Range(r *pb.RangeRequest) Call {
	return Call{Name: describeReq("Range", r), Do: func(ctx context.Context, t *Target) (proto.Message, error) {
		return t.KV.Range(ctx, r)
	}}
}

// Delete sends a DeleteRangeRequest.
func Delete(r *pb.DeleteRangeRequest) Call {
	return Call{Name: describeReq("DeleteRange", r), Do: func(ctx context.Context, t *Target) (proto.Message, error) {
		return t.KV.DeleteRange(ctx, r)
	}}
}

// Txn sends a TxnRequest.
func Txn(r *pb.TxnRequest) Call {
	return Call{Name: describeReq("Txn", r), Do: func(ctx context.Context, t *Target) (proto.Message, error) {
		return t.KV.Txn(ctx, r)
	}}
}

// Compact sends a CompactionRequest.
func Compact(rev int64, physical bool) Call {
	r := &pb.CompactionRequest{Revision: rev, Physical: physical}
	return Call{Name: describeReq("Compact", r), Do: func(ctx context.Context, t *Target) (proto.Message, error) {
		return t.KV.Compact(ctx, r)
	}}
}

// HashKV sends a HashKVRequest.
func HashKV(rev int64) Call {
	r := &pb.HashKVRequest{Revision: rev}
	return Call{Name: describeReq("HashKV", r), Do: func(ctx context.Context, t *Target) (proto.Message, error) {
		return t.Maintenance.HashKV(ctx, r)
	}}
}

// Operation builders for transactions.

func opPut(k, v string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
}

func opPutReq(p *pb.PutRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: p}}
}

func opRange(r *pb.RangeRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: r}}
}

func opDelete(k, end string) *pb.RequestOp {
	d := &pb.DeleteRangeRequest{Key: []byte(k)}
	if end != "" {
		d.RangeEnd = []byte(end)
	}
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: d}}
}

func opTxn(t *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: t}}
}

func cmpValue(k string, r pb.Compare_CompareResult, v string) *pb.Compare {
	return &pb.Compare{Key: []byte(k), Target: pb.Compare_VALUE, Result: r, TargetUnion: &pb.Compare_Value{Value: []byte(v)}}
}

func cmpInt(k string, target pb.Compare_CompareTarget, r pb.Compare_CompareResult, n int64) *pb.Compare {
	c := &pb.Compare{Key: []byte(k), Target: target, Result: r}
	switch target {
	case pb.Compare_VERSION:
		c.TargetUnion = &pb.Compare_Version{Version: n}
	case pb.Compare_CREATE:
		c.TargetUnion = &pb.Compare_CreateRevision{CreateRevision: n}
	case pb.Compare_MOD:
		c.TargetUnion = &pb.Compare_ModRevision{ModRevision: n}
	case pb.Compare_LEASE:
		c.TargetUnion = &pb.Compare_Lease{Lease: n}
	}
	return c
}
