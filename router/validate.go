package router

import (
	"bytes"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The request checks etcd makes before it does anything (its v3rpc/key.go),
// in the same order, with the same errors.

func checkRangeRequest(r *pb.RangeRequest) error {
	if len(r.Key) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if _, ok := pb.RangeRequest_SortOrder_name[int32(r.SortOrder)]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	if _, ok := pb.RangeRequest_SortTarget_name[int32(r.SortTarget)]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	return nil
}

func checkPutRequest(r *pb.PutRequest) error {
	if len(r.Key) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if r.IgnoreValue && len(r.Value) != 0 {
		return rpctypes.ErrGRPCValueProvided
	}
	if r.IgnoreLease && r.Lease != 0 {
		return rpctypes.ErrGRPCLeaseProvided
	}
	return nil
}

func checkDeleteRequest(r *pb.DeleteRangeRequest) error {
	if len(r.Key) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	return nil
}

// checkTxnRequest limits each of compares, success and failure to maxOps
// (nested transactions count against what is left), and rejects empty keys.
func checkTxnRequest(r *pb.TxnRequest, maxOps int) error {
	opc := max(len(r.Compare), len(r.Success), len(r.Failure))
	if opc > maxOps {
		return rpctypes.ErrGRPCTooManyOps
	}
	for _, c := range r.Compare {
		if len(c.Key) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
	}
	for _, branch := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range branch {
			if err := checkRequestOp(op, maxOps-opc); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkRequestOp(op *pb.RequestOp, maxOps int) error {
	switch tv := op.Request.(type) {
	case *pb.RequestOp_RequestRange:
		return checkRangeRequest(tv.RequestRange)
	case *pb.RequestOp_RequestPut:
		return checkPutRequest(tv.RequestPut)
	case *pb.RequestOp_RequestDeleteRange:
		return checkDeleteRequest(tv.RequestDeleteRange)
	case *pb.RequestOp_RequestTxn:
		return checkTxnRequest(tv.RequestTxn, maxOps)
	}
	return rpctypes.ErrGRPCKeyNotFound // an empty operation, as etcd answers it
}

// interval is a key or key range of a put or delete.
type interval struct{ start, end []byte }

func pointInterval(k []byte) interval { return interval{start: k} }

func (iv interval) contains(k []byte) bool {
	if iv.end == nil {
		return bytes.Equal(iv.start, k)
	}
	return bytes.Compare(k, iv.start) >= 0 && bytes.Compare(k, iv.end) < 0
}

// deleteInterval is the interval a delete covers as etcd's check sees it:
// bytewise, so a range end of "\x00" covers nothing here (etcd's quirk; the
// delete itself still runs to the end of the key space).
func deleteInterval(d *pb.DeleteRangeRequest) interval {
	if len(d.RangeEnd) == 0 {
		return pointInterval(d.Key)
	}
	return interval{start: d.Key, end: d.RangeEnd}
}

func intersects(dels []interval, k []byte) bool {
	for _, d := range dels {
		if d.contains(k) {
			return true
		}
	}
	return false
}

// checkIntervals rejects a list of operations in which a key is put twice,
// or put and deleted, on the same path (etcd's checkIntervals). The success
// and failure branches of a nested Txn exclude each other, so a key may be
// put in both.
func checkIntervals(reqs []*pb.RequestOp) (map[string]struct{}, []interval, error) {
	var dels []interval
	for _, req := range reqs {
		if d := req.GetRequestDeleteRange(); d != nil {
			dels = append(dels, deleteInterval(d))
		}
	}
	puts := make(map[string]struct{})
	for _, req := range reqs {
		t := req.GetRequestTxn()
		if t == nil {
			continue
		}
		putsThen, delsThen, err := checkIntervals(t.Success)
		if err != nil {
			return nil, nil, err
		}
		putsElse, delsElse, err := checkIntervals(t.Failure)
		if err != nil {
			return nil, nil, err
		}
		for k := range putsThen {
			if _, ok := puts[k]; ok || intersects(dels, []byte(k)) {
				return nil, nil, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = struct{}{}
		}
		for k := range putsElse {
			if _, ok := puts[k]; ok {
				if _, then := putsThen[k]; !then {
					return nil, nil, rpctypes.ErrGRPCDuplicateKey
				}
			}
			if intersects(dels, []byte(k)) {
				return nil, nil, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = struct{}{}
		}
		dels = append(dels, delsThen...)
		dels = append(dels, delsElse...)
	}
	for _, req := range reqs {
		p := req.GetRequestPut()
		if p == nil {
			continue
		}
		k := string(p.Key)
		if _, ok := puts[k]; ok || intersects(dels, p.Key) {
			return nil, nil, rpctypes.ErrGRPCDuplicateKey
		}
		puts[k] = struct{}{}
	}
	return puts, dels, nil
}

// raftEnvelope approximates what etcd adds around a request in its Raft
// entry (InternalRaftRequest: a request header with a 64-bit id, and the
// field tag and length of the request), which counts against
// --max-request-bytes.
const raftEnvelope = 14

// checkRequestSize rejects a write etcd would find too large for its log.
func checkRequestSize(m proto.Message, maxBytes int) error {
	n := proto.Size(m)
	if n+1+protowire.SizeVarint(uint64(n))+raftEnvelope > maxBytes {
		return errRequestTooLarge
	}
	return nil
}
