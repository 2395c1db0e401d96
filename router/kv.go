package router

import (
	"bytes"
	"context"
	"math"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/txncoord"
)

// kvServer is etcd's KV service over the coordinator.
type kvServer struct {
	pb.UnimplementedKVServer
	s *Server
}

func (k *kvServer) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	if err := checkRangeRequest(r); err != nil {
		return nil, err
	}
	resp, err := k.rangeRouted(ctx, r)
	if err != nil {
		return nil, toGRPCError(ctx, err)
	}
	k.s.fillHeader(resp.Header)
	return resp, nil
}

// rangeRouted runs a range here or at the shard's leader.
func (k *kvServer) rangeRouted(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	return routed(k.s, ctx, false, func() (*pb.RangeResponse, error) { return k.s.coord.Range(ctx, r) },
		func(ctx context.Context, _ uint64, conn *grpc.ClientConn) (*pb.RangeResponse, error) {
			return pb.NewKVClient(conn).Range(forwarded(ctx), r)
		})
}

func (k *kvServer) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	if err := checkPutRequest(r); err != nil {
		return nil, err
	}
	if err := checkRequestSize(r, k.s.cfg.MaxRequestBytes); err != nil {
		return nil, toGRPCError(ctx, err)
	}
	resp, err := routed(k.s, ctx, true, func() (*pb.PutResponse, error) { return k.s.coord.Put(ctx, r) },
		func(ctx context.Context, leader uint64, _ *grpc.ClientConn) (*pb.PutResponse, error) {
			resp, err := k.s.fwd.write(ctx, leader, txncoord.PutTxn(r))
			if err != nil {
				return nil, err
			}
			return txncoord.PutResponse(resp), nil
		})
	if err != nil {
		return nil, toGRPCError(ctx, err)
	}
	k.s.fillHeader(resp.Header)
	return resp, nil
}

func (k *kvServer) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	if err := checkDeleteRequest(r); err != nil {
		return nil, err
	}
	if err := checkRequestSize(r, k.s.cfg.MaxRequestBytes); err != nil {
		return nil, toGRPCError(ctx, err)
	}
	resp, err := routed(k.s, ctx, true, func() (*pb.DeleteRangeResponse, error) { return k.s.coord.DeleteRange(ctx, r) },
		func(ctx context.Context, leader uint64, _ *grpc.ClientConn) (*pb.DeleteRangeResponse, error) {
			resp, err := k.s.fwd.write(ctx, leader, txncoord.DeleteRangeTxn(r))
			if err != nil {
				return nil, err
			}
			return txncoord.DeleteRangeResponse(resp), nil
		})
	if err != nil {
		return nil, toGRPCError(ctx, err)
	}
	k.s.fillHeader(resp.Header)
	return resp, nil
}

func (k *kvServer) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := checkTxnRequest(r, k.s.cfg.MaxTxnOps); err != nil {
		return nil, err
	}
	if _, _, err := checkIntervals(r.Success); err != nil {
		return nil, err
	}
	if _, _, err := checkIntervals(r.Failure); err != nil {
		return nil, err
	}
	if !txncoord.IsTxnReadonly(r) {
		if err := checkRequestSize(r, k.s.cfg.MaxRequestBytes); err != nil {
			return nil, toGRPCError(ctx, err)
		}
	}
	resp, err := routed(k.s, ctx, !txncoord.IsTxnReadonly(r), func() (*pb.TxnResponse, error) { return k.s.coord.Txn(ctx, r) },
		func(ctx context.Context, leader uint64, _ *grpc.ClientConn) (*pb.TxnResponse, error) {
			return k.s.fwd.write(ctx, leader, r)
		})
	if err != nil {
		return nil, toGRPCError(ctx, err)
	}
	k.s.fillHeader(resp.Header)
	return resp, nil
}

func (k *kvServer) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	resp, err := routed(k.s, ctx, true, func() (*pb.CompactionResponse, error) { return k.s.coord.Compact(ctx, r) },
		func(ctx context.Context, _ uint64, conn *grpc.ClientConn) (*pb.CompactionResponse, error) {
			return pb.NewKVClient(conn).Compact(forwarded(ctx), r)
		})
	if err != nil {
		return nil, toGRPCError(ctx, err)
	}
	k.s.fillHeader(resp.Header)
	return resp, nil
}

// RangeStream sends a range in chunks, all at the revision of the first
// chunk, as etcd 3.7 does: each chunk but the last carries only keys; the
// last carries the header, more and the total count. A chunk reads one
// shard: it ends where the shard that holds its first key ends.
func (k *kvServer) RangeStream(r *pb.RangeRequest, stream pb.KV_RangeStreamServer) error {
	ctx := stream.Context()
	if err := checkRangeRequest(r); err != nil {
		return err
	}
	if !mvcc.IsDefaultOrdering(r.SortTarget, r.SortOrder) {
		return status.Errorf(codes.Unimplemented, "RangeStream does not support custom sort orders")
	}
	if mvcc.HasRevisionFilters(r) {
		return status.Errorf(codes.Unimplemented, "RangeStream does not support revision filters")
	}
	r = proto.Clone(r).(*pb.RangeRequest)
	if r.CountOnly {
		resp, err := k.rangeRouted(ctx, r)
		if err != nil {
			return toGRPCError(ctx, err)
		}
		out := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: resp.Header.Revision}, Count: resp.Count}
		k.s.fillHeader(out.Header)
		return stream.Send(&pb.RangeStreamResponse{RangeResponse: out})
	}
	total := r.Limit
	if total == 0 {
		total = math.MaxInt64
	}
	end := r.RangeEnd
	limit := min(streamChunkLimit, total)
	var count, headerRev int64
	for {
		chunk := proto.Clone(r).(*pb.RangeRequest)
		chunk.Limit = limit
		clipped := false
		if len(end) > 0 { // a range, not a single key
			if se := k.s.coord.ShardEnd(chunk.Key); len(se) > 0 && (isToEnd(end) || bytes.Compare(se, end) < 0) {
				chunk.RangeEnd, clipped = se, true
			}
		}
		resp, err := k.rangeRouted(ctx, chunk)
		if err != nil {
			return toGRPCError(ctx, err)
		}
		if headerRev == 0 {
			headerRev = resp.Header.Revision
			if r.Revision == 0 {
				r.Revision = headerRev
			}
		}
		count += int64(len(resp.Kvs))
		next := chunk.RangeEnd // the next shard's first key
		if resp.More {
			next = append(bytes.Clone(resp.Kvs[len(resp.Kvs)-1].Key), 0)
		}
		left := resp.More || clipped // keys may remain in [next, end)
		out := &pb.RangeResponse{Kvs: resp.Kvs}
		done := !left || count == total
		if done {
			out.Header = &pb.ResponseHeader{Revision: headerRev}
			out.Count = count
			if left {
				rest, err := k.rangeRouted(ctx, &pb.RangeRequest{Key: next, RangeEnd: end, Revision: r.Revision, CountOnly: true})
				if err != nil {
					return toGRPCError(ctx, err)
				}
				out.More = rest.Count > 0
				out.Count += rest.Count
			}
			k.s.fillHeader(out.Header)
		}
		if len(out.Kvs) > 0 || done {
			if err := stream.Send(&pb.RangeStreamResponse{RangeResponse: out}); err != nil {
				return err
			}
		}
		if done {
			return nil
		}
		r.Key = next
		if len(resp.Kvs) > 0 {
			limit = nextChunkLimit(limit, proto.Size(resp), k.s.cfg.MaxRequestBytes)
		}
		limit = min(limit, total-count)
	}
}

// isToEnd reports whether an etcd range end is "\x00": every key on.
func isToEnd(end []byte) bool { return len(end) == 1 && end[0] == 0 }

const streamChunkLimit = 10

// nextChunkLimit doubles or halves the chunk size to keep chunks near the
// target size.
func nextChunkLimit(last int64, lastSize, target int) int64 {
	switch {
	case lastSize < target/2:
		last *= 2
	case lastSize > target*2:
		last /= 2
	}
	return max(last, 1)
}
