package difftest

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

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

// RangeStream sends a RangeRequest to RangeStream and answers the chunks
// merged into one RangeResponse: every chunk's keys in order, the last
// chunk's header, more and count (chunk sizes are the server's to choose).
func RangeStream(r *pb.RangeRequest) Call {
	return Call{Name: describeReq("RangeStream", r), Do: func(ctx context.Context, t *Target) (proto.Message, error) {
		stream, err := t.KV.RangeStream(ctx, r)
		if err != nil {
			return nil, err
		}
		merged := &pb.RangeResponse{}
		for {
			chunk, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return merged, nil
			}
			if err != nil {
				return nil, err
			}
			c := chunk.RangeResponse
			merged.Kvs = append(merged.Kvs, c.Kvs...)
			if c.Header != nil {
				merged.Header, merged.More, merged.Count = c.Header, c.More, c.Count
			}
		}
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

// LeaseGrant sends a LeaseGrantRequest. A lease whose id the server picks
// is revoked again and its id cleared: ids differ between any two servers.
func LeaseGrant(r *pb.LeaseGrantRequest) Call {
	return Call{Name: describeReq("LeaseGrant", r), Do: func(ctx context.Context, t *Target) (proto.Message, error) {
		resp, err := t.Lease.LeaseGrant(ctx, r)
		if err != nil || r.ID != 0 {
			return resp, err
		}
		if _, err := t.Lease.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: resp.ID}); err != nil {
			return nil, fmt.Errorf("revoke the granted lease %x: %w", resp.ID, err)
		}
		resp.ID = 0
		return resp, nil
	}}
}

// LeaseRevoke sends a LeaseRevokeRequest.
func LeaseRevoke(id int64) Call {
	r := &pb.LeaseRevokeRequest{ID: id}
	return Call{Name: describeReq("LeaseRevoke", r), Do: func(ctx context.Context, t *Target) (proto.Message, error) {
		return t.Lease.LeaseRevoke(ctx, r)
	}}
}

// LeaseTimeToLive sends a LeaseTimeToLiveRequest. The keys are sorted
// (etcd lists them in no order) and a remaining TTL above zero becomes 1:
// the exact remaining time is not comparable.
func LeaseTimeToLive(id int64, keys bool) Call {
	r := &pb.LeaseTimeToLiveRequest{ID: id, Keys: keys}
	return Call{Name: describeReq("LeaseTimeToLive", r), Do: func(ctx context.Context, t *Target) (proto.Message, error) {
		resp, err := t.Lease.LeaseTimeToLive(ctx, r)
		if err != nil {
			return nil, err
		}
		slices.SortFunc(resp.Keys, bytes.Compare)
		if resp.TTL > 0 {
			resp.TTL = 1
		}
		return resp, nil
	}}
}

// LeaseLeases sends a LeaseLeasesRequest; the ids are sorted.
func LeaseLeases() Call {
	return Call{Name: "LeaseLeases", Do: func(ctx context.Context, t *Target) (proto.Message, error) {
		resp, err := t.Lease.LeaseLeases(ctx, &pb.LeaseLeasesRequest{})
		if err != nil {
			return nil, err
		}
		slices.SortFunc(resp.Leases, func(a, b *pb.LeaseStatus) int { return cmp.Compare(a.ID, b.ID) })
		return resp, nil
	}}
}

// LeaseKeepAlive renews a lease once on a new keep-alive stream.
func LeaseKeepAlive(id int64) Call {
	return Call{Name: fmt.Sprintf("LeaseKeepAlive{ID:%d}", id), Do: func(ctx context.Context, t *Target) (proto.Message, error) {
		stream, err := t.Lease.LeaseKeepAlive(ctx)
		if err != nil {
			return nil, err
		}
		defer stream.CloseSend() //nolint:errcheck // ends the stream
		if err := stream.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
			return nil, err
		}
		return stream.Recv()
	}}
}
