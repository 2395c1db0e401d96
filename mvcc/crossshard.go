package mvcc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// A transaction across shards (DESIGN §5), or a group of them, locks each
// of its shards, which then applies no other write until the group commits
// or aborts there. While every shard holds the lock, the coordinator works
// the transactions out on its own node (Planner): the shards' applied state
// is their state just before the group's revisions. Each shard then applies
// its part (ApplyWrites), each transaction at its revision.

// Lock returns the encoded lock the shard holds, nil when none.
func (sh *Shard) Lock() []byte {
	if l := sh.lock.Load(); l != nil {
		return *l
	}
	return nil
}

// Lock returns the shard's lock with this batch's change.
func (w *Writer) Lock() []byte {
	if w.lockSet {
		return w.lock
	}
	return w.sh.Lock()
}

// LockChanged reports whether the batch set or dropped the shard's lock.
func (w *Writer) LockChanged() bool { return w.lockSet }

// SetLock records the shard's lock (nil: none) with the batch.
func (w *Writer) SetLock(lock []byte) {
	w.lock, w.lockSet = lock, true
	key := appendMetaKey(nil, w.sh.id, metaLock)
	if lock == nil {
		_ = w.b.Delete(key, nil)
		return
	}
	_ = w.b.Set(key, lock, nil)
}

func txnRecordName(id uint64) string {
	return metaTxn + string(binary.BigEndian.AppendUint64(nil, id))
}

// SetTxnRecord keeps the commit record of transaction id (nil drops it).
func (w *Writer) SetTxnRecord(id uint64, record []byte) {
	key := appendMetaKey(nil, w.sh.id, txnRecordName(id))
	if record == nil {
		_ = w.b.Delete(key, nil)
		return
	}
	_ = w.b.Set(key, record, nil)
}

// TxnRecord is a commit record a primary shard keeps.
type TxnRecord struct {
	ID   uint64
	Data []byte
}

// TxnRecords returns the commit records the shard keeps: one per
// transaction it was the primary of whose other shards have not all
// committed (or been told that they did), in id order.
func (sh *Shard) TxnRecords() ([]TxnRecord, error) {
	prefix := appendMetaKey(nil, sh.id, metaTxn)
	prefix = prefix[:len(prefix)-1] // without the sentinel
	upper := append(slices.Clone(prefix[:len(prefix)-1]), prefix[len(prefix)-1]+1)
	it, err := sh.store.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []TxnRecord
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		if len(k) != len(prefix)+9 {
			return nil, errCorruptValue
		}
		out = append(out, TxnRecord{ID: binary.BigEndian.Uint64(k[len(prefix):]), Data: slices.Clone(it.Value())})
	}
	return out, it.Error()
}

// TxnRecord returns the commit record of transaction id, as this batch
// leaves it.
func (w *Writer) TxnRecord(id uint64) ([]byte, bool, error) {
	return getCopy(w.b, appendMetaKey(nil, w.sh.id, txnRecordName(id)))
}

// ApplyWrites applies one shard's part of a transaction across shards at
// revision rev: txn holds plain puts (value and lease as given) and
// single-key deletes, and no compares; subs are their sub revisions. The
// coordinator worked them out while the shard held the
// transaction's lock, so they need no checks: the leases they name existed
// then.
func (w *Writer) ApplyWrites(ctx context.Context, rev int64, subs []int64, txn *pb.TxnRequest) error {
	if rev <= w.rev {
		return fmt.Errorf("mvcc: transaction at revision %d is not above the shard's revision %d", rev, w.rev)
	}
	if len(subs) != len(txn.Success) {
		return fmt.Errorf("mvcc: transaction at revision %d: %d sub revisions for %d operations", rev, len(subs), len(txn.Success))
	}
	tw := w.BeginTxn(rev)
	tw.subs = subs
	for _, op := range txn.Success {
		switch tv := op.Request.(type) {
		case *pb.RequestOp_RequestPut:
			if _, err := tw.Put(tv.RequestPut.Key, tv.RequestPut.Value, tv.RequestPut.Lease); err != nil {
				return err
			}
		case *pb.RequestOp_RequestDeleteRange:
			if _, _, err := tw.DeleteRange(ctx, tv.RequestDeleteRange.Key, nil); err != nil {
				return err
			}
		default:
			return fmt.Errorf("mvcc: transaction at revision %d: unexpected operation %T", rev, op.Request)
		}
	}
	tw.End()
	return nil
}

// ContainsRange reports whether the shard's span, with this batch's split,
// holds the etcd range [key, end).
func (w *Writer) ContainsRange(key, end []byte) bool { return w.curSpan().containsRange(key, end) }

// ViewOver returns a view at revision rev of shards of one store, in key
// order, that need not be adjacent: its span runs from the first shard's
// start to the last one's end, and the caller reads only inside the shards'
// spans (the keys of a transaction that locked exactly these shards).
func ViewOver(rev int64, shards []*Shard) *ReadView {
	first, last := shards[0].span.Load(), shards[len(shards)-1].span.Load()
	return &ReadView{r: shards[0].store.db, shards: shards, span: keySpan{start: first.start, end: last.end}, rev: rev}
}

// ShardWrites is one shard's part of a planned transaction.
type ShardWrites struct {
	// Txn holds plain puts and single-key deletes, in the order the
	// transaction made them.
	Txn *pb.TxnRequest
	// Subs are the sub revisions of Txn's operations.
	Subs []int64
}

// Planner works out transactions across shards, one after another, over
// shards of one store (in key order) that hold the transactions' lock, so
// that their applied state does not change: it executes each transaction
// exactly as one etcd would, in a batch that is never committed, so that
// each sees the ones before it.
type Planner struct {
	b       *pebble.Batch
	shards  []*Shard
	writers []*Writer // by index in shards, made on first write
	rev     int64     // the revision the plan is at
	broken  bool
}

// NewPlanner starts a plan over shards whose state is the cluster's at
// revision rev.
func NewPlanner(shards []*Shard, rev int64) *Planner {
	return &Planner{b: shards[0].store.db.NewIndexedBatch(), shards: shards, writers: make([]*Writer, len(shards)), rev: rev}
}

// Close drops the plan.
func (p *Planner) Close() { _ = p.b.Close() }

// Broken reports whether a transaction failed after it wrote to the plan:
// the plan takes no more.
func (p *Planner) Broken() bool { return p.broken }

// Rev returns the revision the plan is at: its newest transaction's.
func (p *Planner) Rev() int64 { return p.rev }

// Read answers rt at the plan's revision if its chosen path changes
// nothing (mvcc.ReadTxn); ErrTxnWrites when it would write.
func (p *Planner) Read(ctx context.Context, rt *pb.TxnRequest, leases LeaseChecker) (*pb.TxnResponse, error) {
	if p.broken {
		return nil, errPlanBroken
	}
	v := ViewOver(p.rev, p.shards)
	v.r = p.b
	return ReadTxn(ctx, v, rt, leases)
}

// errPlanBroken is returned once a transaction failed after it wrote to
// the plan's batch.
var errPlanBroken = errors.New("mvcc: the plan failed after it wrote")

// Plan executes rt at revision rev, above the plan's: compares, checks and
// operations. It returns the response and, per shard that changes, the
// writes that make the same changes (ApplyWrites). A failed check changes
// nothing; a failure after the transaction wrote breaks the plan (every
// later call fails too).
func (p *Planner) Plan(ctx context.Context, rev int64, rt *pb.TxnRequest, leases LeaseChecker) (*pb.TxnResponse, map[uint64]*ShardWrites, error) {
	if p.broken {
		return nil, nil, errPlanBroken
	}
	if rev <= p.rev {
		return nil, nil, fmt.Errorf("mvcc: plan at revision %d, not above %d", rev, p.rev)
	}
	v := ViewOver(rev-1, p.shards)
	v.r = p.b
	x := &crossTxn{p: p, view: *v, rev: rev, tws: make([]*TxnWrite, len(p.shards)), writes: make(map[uint64]*ShardWrites)}
	path := TxnPath(ctx, x, rt)
	if err := CheckTxn(ctx, x, rt, leases, path); err != nil {
		return nil, nil, err
	}
	resp, _ := newTxnResp(rt, path)
	if _, err := executeTxn(ctx, x, rt, path, resp); err != nil {
		p.broken = true
		return nil, nil, fmt.Errorf("mvcc: transaction at revision %d failed after it wrote: %v", rev, err)
	}
	for _, tw := range x.tws {
		if tw != nil {
			tw.End()
		}
	}
	resp.Header.Revision = x.curRev()
	if x.changes > 0 {
		p.rev = rev
	}
	return resp, x.writes, nil
}

// crossTxn executes one transaction of a plan over several shards,
// recording each shard's writes.
type crossTxn struct {
	p       *Planner
	view    ReadView // over the plan's batch: sees the transaction's own writes
	rev     int64
	changes int64
	tws     []*TxnWrite // by index in the plan's shards, made on first write
	writes  map[uint64]*ShardWrites
}

func (x *crossTxn) Rev() int64      { return x.rev - 1 }
func (x *crossTxn) FirstRev() int64 { return x.view.compactRev() }

func (x *crossTxn) curRev() int64 {
	if x.changes > 0 {
		return x.rev
	}
	return x.rev - 1
}

func (x *crossTxn) Range(ctx context.Context, key, end []byte, ro RangeOptions) (*RangeResult, error) {
	cur := x.curRev()
	return x.view.rangeKeys(ctx, key, end, cur, ro)
}

// writerFor returns the transaction write of the shard that holds key.
// Each shard's writer lives as long as the plan: its latest versions carry
// the plan's earlier transactions.
func (x *crossTxn) writerFor(key []byte) (*TxnWrite, *Shard, error) {
	p := x.p
	for i, sh := range p.shards {
		if !sh.Contains(key) {
			continue
		}
		if p.writers[i] == nil {
			p.writers[i] = &Writer{sh: sh, b: p.b, rev: sh.rev.Load(), compact: sh.compact.Load()}
		}
		if x.tws[i] == nil {
			x.tws[i] = p.writers[i].BeginTxn(x.rev)
		}
		return x.tws[i], sh, nil
	}
	return nil, nil, fmt.Errorf("mvcc: key %q is in none of the transaction's shards", key)
}

func (x *crossTxn) record(sh *Shard, op *pb.RequestOp) {
	w := x.writes[sh.id]
	if w == nil {
		w = &ShardWrites{Txn: &pb.TxnRequest{}}
		x.writes[sh.id] = w
	}
	w.Txn.Success = append(w.Txn.Success, op)
	w.Subs = append(w.Subs, x.changes)
	x.changes++
}

func (x *crossTxn) Put(key, value []byte, lease int64) (int64, error) {
	tw, sh, err := x.writerFor(key)
	if err != nil {
		return 0, err
	}
	if _, err := tw.Put(key, value, lease); err != nil {
		return 0, err
	}
	x.record(sh, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
		Key: bytes.Clone(key), Value: bytes.Clone(value), Lease: lease,
	}}})
	return x.rev, nil
}

func (x *crossTxn) DeleteRange(ctx context.Context, key, end []byte) (int64, int64, error) {
	rr, err := x.Range(ctx, key, end, RangeOptions{KeysOnly: true})
	if err != nil {
		return 0, 0, err
	}
	for _, kv := range rr.KVs {
		tw, sh, err := x.writerFor(kv.Key)
		if err != nil {
			return 0, 0, err
		}
		if err := tw.delete(kv.Key, kv.Lease); err != nil {
			return 0, 0, err
		}
		x.record(sh, &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{
			Key: bytes.Clone(kv.Key),
		}}})
	}
	n := int64(len(rr.KVs))
	if n != 0 || x.changes > 0 {
		return n, x.rev, nil
	}
	return 0, x.rev - 1, nil
}
