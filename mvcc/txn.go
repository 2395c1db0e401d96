package mvcc

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"sort"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// LeaseChecker tells whether a lease exists. A nil LeaseChecker knows no
// leases.
type LeaseChecker interface {
	LeaseExists(id int64) bool
}

// txnReader is what compares, checks and range operations read through: a
// ReadView, or a TxnWrite that also sees its own writes.
type txnReader interface {
	Range(ctx context.Context, key, end []byte, ro RangeOptions) (*RangeResult, error)
	// Rev is the revision before the transaction.
	Rev() int64
	FirstRev() int64
}

// txnWriter executes a transaction's operations.
type txnWriter interface {
	txnReader
	Put(key, value []byte, lease int64) (int64, error)
	DeleteRange(ctx context.Context, key, end []byte) (deleted, rev int64, err error)
	curRev() int64
}

// ExecuteRange answers a RangeRequest from r exactly as etcd does: limit,
// revision filters, sort order and target, count, more, keys_only.
func ExecuteRange(ctx context.Context, r txnReader, req *pb.RangeRequest) (*pb.RangeResponse, error) {
	return executeRange(ctx, r, req, true)
}

func executeRange(ctx context.Context, r txnReader, req *pb.RangeRequest, withTotalCount bool) (*pb.RangeResponse, error) {
	ro := RangeOptions{
		Limit:          rangeLimit(req),
		Rev:            req.Revision,
		CountOnly:      req.CountOnly,
		KeysOnly:       req.KeysOnly && req.SortTarget != pb.RangeRequest_VALUE,
		WithTotalCount: withTotalCount,
	}
	rr, err := r.Range(ctx, req.Key, rangeEnd(req.RangeEnd), ro)
	if err != nil {
		return nil, err
	}
	filterRangeResults(rr, req)
	sortRangeResults(rr, req)
	resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: rr.Rev}, Count: int64(rr.Count)}
	if req.Limit > 0 && len(rr.KVs) > int(req.Limit) {
		rr.KVs = rr.KVs[:req.Limit]
		resp.More = true
	}
	if req.KeysOnly {
		for _, kv := range rr.KVs {
			kv.Value = nil
		}
	}
	resp.Kvs = rr.KVs
	return resp, nil
}

// rangeEnd turns etcd's "\x00" (every key from key on) into the zero-length
// non-nil end mvcc reads as "no upper bound"; nil stays a single key.
func rangeEnd(end []byte) []byte {
	if len(end) == 1 && end[0] == 0 {
		return []byte{}
	}
	return end
}

// IsDefaultOrdering reports whether the result is already in the order the
// scan produces (ascending by key).
func IsDefaultOrdering(target pb.RangeRequest_SortTarget, order pb.RangeRequest_SortOrder) bool {
	return order == pb.RangeRequest_NONE || (target == pb.RangeRequest_KEY && order == pb.RangeRequest_ASCEND)
}

// HasRevisionFilters reports whether the request filters by revisions.
func HasRevisionFilters(r *pb.RangeRequest) bool {
	return r.MinModRevision != 0 || r.MaxModRevision != 0 || r.MinCreateRevision != 0 || r.MaxCreateRevision != 0
}

// rangeLimit is the scan limit: none when results are re-sorted or filtered
// afterwards, else one more than asked so that More can be told.
func rangeLimit(r *pb.RangeRequest) int64 {
	limit := r.Limit
	if !IsDefaultOrdering(r.SortTarget, r.SortOrder) || HasRevisionFilters(r) {
		limit = 0
	}
	if limit > 0 && limit < math.MaxInt64 {
		limit++
	}
	return limit
}

func filterRangeResults(rr *RangeResult, r *pb.RangeRequest) {
	if r.MaxModRevision != 0 {
		pruneKVs(rr, func(kv *mvccpb.KeyValue) bool { return kv.ModRevision > r.MaxModRevision })
	}
	if r.MinModRevision != 0 {
		pruneKVs(rr, func(kv *mvccpb.KeyValue) bool { return kv.ModRevision < r.MinModRevision })
	}
	if r.MaxCreateRevision != 0 {
		pruneKVs(rr, func(kv *mvccpb.KeyValue) bool { return kv.CreateRevision > r.MaxCreateRevision })
	}
	if r.MinCreateRevision != 0 {
		pruneKVs(rr, func(kv *mvccpb.KeyValue) bool { return kv.CreateRevision < r.MinCreateRevision })
	}
}

func pruneKVs(rr *RangeResult, prunable func(*mvccpb.KeyValue) bool) {
	j := 0
	for _, kv := range rr.KVs {
		if !prunable(kv) {
			rr.KVs[j] = kv
			j++
		}
	}
	rr.KVs = rr.KVs[:j]
}

// sortRangeResults sorts with sort.Sort over the key-ordered scan, the same
// algorithm on the same input as etcd, so that ties come out in etcd's order.
func sortRangeResults(rr *RangeResult, r *pb.RangeRequest) {
	order := r.SortOrder
	if r.SortTarget != pb.RangeRequest_KEY && order == pb.RangeRequest_NONE {
		order = pb.RangeRequest_ASCEND
	}
	if IsDefaultOrdering(r.SortTarget, order) {
		return
	}
	var s sort.Interface
	kvs := kvSort(rr.KVs)
	switch r.SortTarget {
	case pb.RangeRequest_KEY:
		s = kvSortByKey{kvs}
	case pb.RangeRequest_VERSION:
		s = kvSortByVersion{kvs}
	case pb.RangeRequest_CREATE:
		s = kvSortByCreate{kvs}
	case pb.RangeRequest_MOD:
		s = kvSortByMod{kvs}
	case pb.RangeRequest_VALUE:
		s = kvSortByValue{kvs}
	default:
		return // rejected by request validation
	}
	switch order {
	case pb.RangeRequest_ASCEND:
		sort.Sort(s)
	case pb.RangeRequest_DESCEND:
		sort.Sort(sort.Reverse(s))
	}
}

type kvSort []*mvccpb.KeyValue

func (s kvSort) Len() int      { return len(s) }
func (s kvSort) Swap(i, j int) { s[i], s[j] = s[j], s[i] }

type kvSortByKey struct{ kvSort }

func (s kvSortByKey) Less(i, j int) bool { return bytes.Compare(s.kvSort[i].Key, s.kvSort[j].Key) < 0 }

type kvSortByVersion struct{ kvSort }

func (s kvSortByVersion) Less(i, j int) bool { return s.kvSort[i].Version < s.kvSort[j].Version }

type kvSortByCreate struct{ kvSort }

func (s kvSortByCreate) Less(i, j int) bool {
	return s.kvSort[i].CreateRevision < s.kvSort[j].CreateRevision
}

type kvSortByMod struct{ kvSort }

func (s kvSortByMod) Less(i, j int) bool { return s.kvSort[i].ModRevision < s.kvSort[j].ModRevision }

type kvSortByValue struct{ kvSort }

func (s kvSortByValue) Less(i, j int) bool {
	return bytes.Compare(s.kvSort[i].Value, s.kvSort[j].Value) < 0
}

// TxnPath evaluates the compares of rt and of every nested Txn on the chosen
// branches, depth first: path[0] is rt's own result.
func TxnPath(ctx context.Context, r txnReader, rt *pb.TxnRequest) []bool {
	path := []bool{applyCompares(ctx, r, rt.Compare)}
	ops := rt.Success
	if !path[0] {
		ops = rt.Failure
	}
	for _, op := range ops {
		if t := op.GetRequestTxn(); t != nil {
			path = append(path, TxnPath(ctx, r, t)...)
		}
	}
	return path
}

func applyCompares(ctx context.Context, r txnReader, cmps []*pb.Compare) bool {
	for _, c := range cmps {
		if !applyCompare(ctx, r, c) {
			return false
		}
	}
	return true
}

// applyCompare holds when every key in the compare's range satisfies it; a
// range with no key compares as one absent key (which fails on VALUE).
func applyCompare(ctx context.Context, r txnReader, c *pb.Compare) bool {
	rr, err := r.Range(ctx, c.Key, rangeEnd(c.RangeEnd), RangeOptions{})
	if err != nil {
		return false
	}
	if len(rr.KVs) == 0 {
		if c.Target == pb.Compare_VALUE {
			return false
		}
		return compareKV(c, &mvccpb.KeyValue{})
	}
	for _, kv := range rr.KVs {
		if !compareKV(c, kv) {
			return false
		}
	}
	return true
}

func compareKV(c *pb.Compare, kv *mvccpb.KeyValue) bool {
	var result int
	switch c.Target {
	case pb.Compare_VALUE:
		result = bytes.Compare(kv.Value, c.GetValue())
	case pb.Compare_CREATE:
		result = compareInt64(kv.CreateRevision, c.GetCreateRevision())
	case pb.Compare_MOD:
		result = compareInt64(kv.ModRevision, c.GetModRevision())
	case pb.Compare_VERSION:
		result = compareInt64(kv.Version, c.GetVersion())
	case pb.Compare_LEASE:
		result = compareInt64(kv.Lease, c.GetLease())
	}
	switch c.Result {
	case pb.Compare_EQUAL:
		return result == 0
	case pb.Compare_NOT_EQUAL:
		return result != 0
	case pb.Compare_GREATER:
		return result > 0
	case pb.Compare_LESS:
		return result < 0
	}
	return true
}

func compareInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ops returns the operations of the branch path[0] chose.
func ops(rt *pb.TxnRequest, path []bool) []*pb.RequestOp {
	if path[0] {
		return rt.Success
	}
	return rt.Failure
}

// CheckTxn returns the error etcd returns before it executes anything: a
// range at a future or compacted revision, a put whose lease does not exist,
// a put with ignore_value or ignore_lease on an absent key. Operations are
// checked in order and the first error wins.
//
// A put with ignore_value or ignore_lease on a key that a delete earlier in
// the same transaction removed also fails here. (etcd's overlap check lets
// such a transaction through when the delete's range end is "\x00", and
// etcd then crashes executing it.) So execution never fails half way.
func CheckTxn(ctx context.Context, r txnReader, rt *pb.TxnRequest, leases LeaseChecker, path []bool) error {
	var deleted []deletedSpan
	_, err := checkTxn(ctx, r, rt, leases, path, &deleted)
	return err
}

// deletedSpan is the range of a delete, in etcd's range-end forms.
type deletedSpan struct{ key, end []byte }

func (d deletedSpan) contains(k []byte) bool {
	end := rangeEnd(d.end)
	switch {
	case end == nil:
		return bytes.Equal(k, d.key)
	case len(end) == 0:
		return bytes.Compare(k, d.key) >= 0
	}
	return bytes.Compare(k, d.key) >= 0 && bytes.Compare(k, end) < 0
}

func checkTxn(ctx context.Context, r txnReader, rt *pb.TxnRequest, leases LeaseChecker, path []bool, deleted *[]deletedSpan) (int, error) {
	nested := 0
	for _, op := range ops(rt, path) {
		var err error
		switch tv := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			err = checkRange(r, tv.RequestRange)
		case *pb.RequestOp_RequestPut:
			err = checkPut(ctx, r, leases, tv.RequestPut)
			if err == nil && (tv.RequestPut.IgnoreValue || tv.RequestPut.IgnoreLease) {
				for _, d := range *deleted {
					if d.contains(tv.RequestPut.Key) {
						err = ErrKeyNotFound
					}
				}
			}
		case *pb.RequestOp_RequestDeleteRange:
			*deleted = append(*deleted, deletedSpan{tv.RequestDeleteRange.Key, tv.RequestDeleteRange.RangeEnd})
		case *pb.RequestOp_RequestTxn:
			var n int
			n, err = checkTxn(ctx, r, tv.RequestTxn, leases, path[1:], deleted)
			nested += n + 1
			path = path[n+1:]
		}
		if err != nil {
			return 0, err
		}
	}
	return nested, nil
}

func checkRange(r txnReader, req *pb.RangeRequest) error {
	switch {
	case req.Revision == 0:
		return nil
	case req.Revision > r.Rev():
		return ErrFutureRev
	case req.Revision < r.FirstRev():
		return ErrCompacted
	}
	return nil
}

// CheckPutLease returns ErrLeaseNotFound when a put names a lease that does
// not exist.
func CheckPutLease(leases LeaseChecker, p *pb.PutRequest) error {
	if p.Lease != 0 && (leases == nil || !leases.LeaseExists(p.Lease)) {
		return ErrLeaseNotFound
	}
	return nil
}

func checkPut(ctx context.Context, r txnReader, leases LeaseChecker, p *pb.PutRequest) error {
	if err := CheckPutLease(leases, p); err != nil {
		return err
	}
	_, err := prevKV(ctx, r, p)
	return err
}

// prevKV reads the key a put replaces when the put needs it.
func prevKV(ctx context.Context, r txnReader, p *pb.PutRequest) (*mvccpb.KeyValue, error) {
	if !p.IgnoreValue && !p.IgnoreLease && !p.PrevKv {
		return nil, nil
	}
	rr, err := r.Range(ctx, p.Key, nil, RangeOptions{})
	if err != nil {
		return nil, err
	}
	if len(rr.KVs) == 0 {
		if p.IgnoreValue || p.IgnoreLease {
			return nil, ErrKeyNotFound
		}
		return nil, nil
	}
	return rr.KVs[0], nil
}

// PathWrites reports whether executing the chosen path would change
// anything: a put always does, a delete when its range holds a key. Within
// one path puts and deletes never overlap (request validation rejects it),
// so the state before the transaction decides.
func PathWrites(ctx context.Context, r txnReader, rt *pb.TxnRequest, path []bool) (bool, error) {
	writes, _, err := pathWrites(ctx, r, rt, path)
	return writes, err
}

func pathWrites(ctx context.Context, r txnReader, rt *pb.TxnRequest, path []bool) (bool, int, error) {
	nested := 0
	for _, op := range ops(rt, path) {
		switch tv := op.Request.(type) {
		case *pb.RequestOp_RequestPut:
			return true, 0, nil
		case *pb.RequestOp_RequestDeleteRange:
			d := tv.RequestDeleteRange
			rr, err := r.Range(ctx, d.Key, rangeEnd(d.RangeEnd), RangeOptions{Limit: 1, CountOnly: true})
			if err != nil {
				return false, 0, err
			}
			if rr.Count > 0 {
				return true, 0, nil
			}
		case *pb.RequestOp_RequestTxn:
			w, n, err := pathWrites(ctx, r, tv.RequestTxn, path[1:])
			if err != nil || w {
				return w, 0, err
			}
			nested += n + 1
			path = path[n+1:]
		}
	}
	return false, nested, nil
}

// newTxnResp builds the response skeleton of the chosen path.
func newTxnResp(rt *pb.TxnRequest, path []bool) (*pb.TxnResponse, int) {
	reqs := ops(rt, path)
	var resp *pb.TxnResponse
	if len(reqs) == 1 {
		// One allocation for a transaction of one operation, as every
		// put and delete is.
		r := &struct {
			resp pb.TxnResponse
			hdr  pb.ResponseHeader
			ops  [1]*pb.ResponseOp
		}{}
		resp = &r.resp
		resp.Header, resp.Responses = &r.hdr, r.ops[:]
	} else {
		resp = &pb.TxnResponse{Header: &pb.ResponseHeader{}, Responses: make([]*pb.ResponseOp, len(reqs))}
	}
	resp.Succeeded = path[0]
	nested := 0
	for i, req := range reqs {
		switch tv := req.Request.(type) {
		case *pb.RequestOp_RequestRange:
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{}}
		case *pb.RequestOp_RequestPut:
			op := &struct {
				op  pb.ResponseOp
				put pb.ResponseOp_ResponsePut
			}{}
			op.op.Response = &op.put
			resp.Responses[i] = &op.op
		case *pb.RequestOp_RequestDeleteRange:
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{}}
		case *pb.RequestOp_RequestTxn:
			sub, n := newTxnResp(tv.RequestTxn, path[1:])
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: sub}}
			path = path[1+n:]
			nested += n + 1
		}
	}
	return resp, nested
}

// executeTxn runs the chosen path's operations in order. With a nil tresp
// it only writes: no one reads the response (a replica applying writes it
// did not propose), so range operations are skipped and nothing is built
// for the answer.
func executeTxn(ctx context.Context, w txnWriter, rt *pb.TxnRequest, path []bool, tresp *pb.TxnResponse) (int, error) {
	nested := 0
	for i, req := range ops(rt, path) {
		var respi any
		if tresp != nil {
			respi = tresp.Responses[i].Response
		}
		switch tv := req.Request.(type) {
		case *pb.RequestOp_RequestRange:
			if tresp == nil {
				continue
			}
			resp, err := executeRange(ctx, w, tv.RequestRange, true)
			if err != nil {
				return 0, err
			}
			respi.(*pb.ResponseOp_ResponseRange).ResponseRange = resp
		case *pb.RequestOp_RequestPut:
			if tresp == nil {
				if err := writePut(ctx, w, tv.RequestPut); err != nil {
					return 0, err
				}
				continue
			}
			resp, err := executePut(ctx, w, tv.RequestPut)
			if err != nil {
				return 0, err
			}
			respi.(*pb.ResponseOp_ResponsePut).ResponsePut = resp
		case *pb.RequestOp_RequestDeleteRange:
			if tresp == nil {
				d := tv.RequestDeleteRange
				if _, _, err := w.DeleteRange(ctx, d.Key, rangeEnd(d.RangeEnd)); err != nil {
					return 0, err
				}
				continue
			}
			resp, err := executeDelete(ctx, w, tv.RequestDeleteRange)
			if err != nil {
				return 0, err
			}
			respi.(*pb.ResponseOp_ResponseDeleteRange).ResponseDeleteRange = resp
		case *pb.RequestOp_RequestTxn:
			var sub *pb.TxnResponse
			if tresp != nil {
				sub = respi.(*pb.ResponseOp_ResponseTxn).ResponseTxn
			}
			n, err := executeTxn(ctx, w, tv.RequestTxn, path[1:], sub)
			if err != nil {
				return 0, err
			}
			nested += n + 1
			path = path[n+1:]
		}
	}
	return nested, nil
}

func executePut(ctx context.Context, w txnWriter, p *pb.PutRequest) (*pb.PutResponse, error) {
	prev, err := prevKV(ctx, w, p)
	if err != nil {
		return nil, err
	}
	r := &struct {
		resp pb.PutResponse
		hdr  pb.ResponseHeader
	}{}
	resp := &r.resp
	resp.Header = &r.hdr
	if p.PrevKv && prev != nil {
		resp.PrevKv = prev
	}
	rev, err := putWith(w, p, prev)
	if err != nil {
		return nil, err
	}
	resp.Header.Revision = rev
	return resp, nil
}

// writePut is executePut without a response: the previous version is read
// only when the put takes its value or lease.
func writePut(ctx context.Context, w txnWriter, p *pb.PutRequest) error {
	var prev *mvccpb.KeyValue
	if p.IgnoreValue || p.IgnoreLease {
		var err error
		if prev, err = prevKV(ctx, w, p); err != nil {
			return err
		}
	}
	_, err := putWith(w, p, prev)
	return err
}

// putWith writes p, taking the value or lease from prev as p asks.
func putWith(w txnWriter, p *pb.PutRequest, prev *mvccpb.KeyValue) (int64, error) {
	value, lease := p.Value, p.Lease
	if p.IgnoreValue {
		value = prev.Value
	}
	if p.IgnoreLease {
		lease = prev.Lease
	}
	return w.Put(p.Key, value, lease)
}

func executeDelete(ctx context.Context, w txnWriter, d *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	resp := &pb.DeleteRangeResponse{Header: &pb.ResponseHeader{}}
	end := rangeEnd(d.RangeEnd)
	if d.PrevKv {
		rr, err := w.Range(ctx, d.Key, end, RangeOptions{})
		if err != nil {
			return nil, err
		}
		resp.PrevKvs = rr.KVs
	}
	n, rev, err := w.DeleteRange(ctx, d.Key, end)
	if err != nil {
		return nil, err
	}
	resp.Deleted, resp.Header.Revision = n, rev
	return resp, nil
}

// ReadTxn answers a transaction that changes nothing from a view: its
// compares, checks and range operations read at the view's revision. It
// returns ErrTxnWrites when the chosen path would change something; such a
// transaction must go through the shard's sequencer.
func ReadTxn(ctx context.Context, v *ReadView, rt *pb.TxnRequest, leases LeaseChecker) (*pb.TxnResponse, error) {
	path := TxnPath(ctx, v, rt)
	if err := CheckTxn(ctx, v, rt, leases, path); err != nil {
		return nil, err
	}
	writes, err := PathWrites(ctx, v, rt, path)
	if err != nil {
		return nil, err
	}
	if writes {
		return nil, ErrTxnWrites
	}
	resp, _ := newTxnResp(rt, path)
	if _, err := executeTxn(ctx, readOnlyTxn{v}, rt, path, resp); err != nil {
		return nil, err
	}
	resp.Header.Revision = v.rev
	return resp, nil
}

// readOnlyTxn executes a path that PathWrites found changes nothing.
type readOnlyTxn struct{ *ReadView }

func (r readOnlyTxn) Put([]byte, []byte, int64) (int64, error) { return 0, ErrTxnWrites }

func (r readOnlyTxn) DeleteRange(context.Context, []byte, []byte) (int64, int64, error) {
	return 0, r.rev, nil
}

func (r readOnlyTxn) curRev() int64 { return r.rev }

// ApplyTxn executes a write transaction at revision rev: compares, checks,
// then the chosen path's operations. changed is false when the path changed
// nothing (rev then stays unused).
func (w *Writer) ApplyTxn(ctx context.Context, rev int64, rt *pb.TxnRequest, leases LeaseChecker) (resp *pb.TxnResponse, changed bool, err error) {
	return w.applyTxn(ctx, rev, rt, leases, true)
}

// ApplyTxnWrites is ApplyTxn for a replica that answers no one: it makes
// the same changes and fails its checks the same way, without building the
// response (so a store failure in a read that only the response needs,
// such as a range operation's, fails ApplyTxn alone).
func (w *Writer) ApplyTxnWrites(ctx context.Context, rev int64, rt *pb.TxnRequest, leases LeaseChecker) (changed bool, err error) {
	_, changed, err = w.applyTxn(ctx, rev, rt, leases, false)
	return changed, err
}

func (w *Writer) applyTxn(ctx context.Context, rev int64, rt *pb.TxnRequest, leases LeaseChecker, respond bool) (resp *pb.TxnResponse, changed bool, err error) {
	tw := w.BeginTxn(rev)
	path := TxnPath(ctx, tw, rt)
	if err := CheckTxn(ctx, tw, rt, leases, path); err != nil {
		return nil, false, err
	}
	if respond {
		resp, _ = newTxnResp(rt, path)
	}
	if _, err := executeTxn(ctx, tw, rt, path, resp); err != nil {
		// The checks passed, so this is the store failing with the batch
		// half written: not an answer to the client (%v, not %w).
		return nil, false, fmt.Errorf("mvcc: transaction at revision %d failed after it wrote: %v", rev, err)
	}
	tw.End()
	if respond {
		resp.Header.Revision = tw.curRev()
	}
	return resp, tw.Changed(), nil
}
