package mvcc

import (
	"context"
	"encoding/binary"
	"math"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Writer applies a run of a shard's Raft entries as one Pebble batch: write
// transactions, compactions, and the shard's metadata (applied index,
// revision) in the same batch, so a crash keeps all of it or none of it.
// Reads through the writer see its own writes. One goroutine uses a Writer.
type Writer struct {
	sh      *Shard
	b       *pebble.Batch
	rev     int64  // revision of the newest write, this batch included
	compact int64  // compacted revision, this batch included
	buf     []byte // scratch for keys
	vbuf    []byte // scratch for values (Pebble copies what it is given)
	// A direct writer (the shard's apply) sets the latest versions it
	// writes straight into the shard's cache, and lists their keys in
	// written to drop them again if the batch does not commit. Merging a
	// map of the batch's versions at commit cost 1.5% of three members'
	// CPU under a put load. A Planner's writers, never committed, keep
	// theirs in latest.
	direct  bool
	written [][]byte
	latest  *versionMap
	// span, when set, is the shard's span once the batch commits (a split).
	span *keySpan
	// events, when captured, are the changes this batch made, in order.
	capture bool
	events  []*mvccpb.Event
	subs    []int64 // the events' sub revisions
	// lock, when lockSet, is the shard's lock once the batch commits.
	lock    []byte
	lockSet bool
	// changes are the batch's change log entries. Commit sets them into
	// the batch together (Compact does first, as it reads them): their
	// revisions only grow, so in Pebble's memtable each insert starts
	// where the one before ended. Set between the data keys, each was a
	// skiplist search from the top, with as many cache misses as a data
	// key's.
	changes changeLog
}

// changeLog holds change log entries: fixed width keys, values end to end.
type changeLog struct {
	keys []byte
	vals []byte
	ends []int // end of each value in vals
}

func (c *changeLog) add(rev Revision, event byte, userKey []byte) {
	if c.ends == nil {
		// Room for a typical batch at once, rather than growing by doubling.
		const n = 16
		c.keys, c.vals, c.ends = make([]byte, 0, n*changeKeyLen), make([]byte, 0, n*32), make([]int, 0, n)
	}
	c.keys = appendChangeKey(c.keys, rev)
	c.vals = appendChange(c.vals, event, userKey)
	c.ends = append(c.ends, len(c.vals))
}

// flushChanges sets the pending change log entries into the batch.
func (w *Writer) flushChanges() error {
	c := &w.changes
	start := 0
	for i, end := range c.ends {
		if err := w.b.Set(c.keys[i*changeKeyLen:(i+1)*changeKeyLen], c.vals[start:end], nil); err != nil {
			return err
		}
		start = end
	}
	c.keys, c.vals, c.ends = c.keys[:0], c.vals[:0], c.ends[:0]
	return nil
}

// CaptureEvents makes the writer keep the events of its changes (for watch).
func (w *Writer) CaptureEvents() { w.capture = true }

// Events returns the events of the batch's changes in revision order (sub
// revisions in order within a revision). Event values alias the requests'.
func (w *Writer) Events() []*mvccpb.Event { return w.events }

// EventSubs returns the sub revisions of Events.
func (w *Writer) EventSubs() []int64 { return w.subs }

// NewWriter starts a batch for the shard.
func (sh *Shard) NewWriter() *Writer {
	w := &Writer{sh: sh, b: sh.store.db.NewIndexedBatch(), rev: sh.rev.Load(), compact: sh.compact.Load(), direct: true, written: sh.spareWritten}
	sh.spareWritten = nil
	return w
}

// Rev returns the shard's revision including this batch's writes.
func (w *Writer) Rev() int64 { return w.rev }

// Commit records appliedIndex with the batch's writes and commits them. The
// commit is not durable until the store's next Sync: the Raft log is, and a
// lost tail is re-applied from it after a crash (Pebble keeps a prefix of
// the commits).
func (w *Writer) Commit(appliedIndex uint64) error {
	defer w.b.Close()
	err := w.flushChanges()
	if err == nil {
		w.setMeta(metaApplied, binary.BigEndian.AppendUint64(nil, appliedIndex))
		w.setMeta(metaRev, binary.BigEndian.AppendUint64(nil, uint64(w.rev)))
		err = w.b.Commit(pebble.NoSync)
	}
	if err != nil {
		w.forgetWritten()
		return err
	}
	w.recycleWritten()
	if w.span != nil {
		w.sh.span.Store(w.span)
	}
	if w.lockSet {
		w.sh.lock.Store(&w.lock)
	}
	w.sh.applied.Store(appliedIndex)
	w.sh.rev.Store(w.rev)
	return nil
}

// Abort drops the batch.
func (w *Writer) Abort() {
	_ = w.b.Close()
	w.forgetWritten()
}

// forgetWritten drops the versions of a batch that did not commit from the
// shard's cache.
func (w *Writer) forgetWritten() {
	w.sh.latest.forget(w.written)
	w.recycleWritten()
}

// recycleWritten hands the emptied list of written keys back to the shard.
func (w *Writer) recycleWritten() {
	if w.written != nil {
		clear(w.written) // they alias the batch's requests
		w.sh.spareWritten, w.written = w.written[:0], nil
	}
}

func (w *Writer) setMeta(name string, value []byte) {
	_ = w.b.Set(appendMetaKey(nil, w.sh.id, name), value, nil)
}

// SetSpan records the shard's span (at bootstrap, and later on splits).
func (w *Writer) SetSpan(start, end []byte) {
	w.setMeta(metaSpan, encodeSpan(start, end))
	w.sh.span.Store(&keySpan{start: append([]byte(nil), start...), end: append([]byte(nil), end...)})
}

// TxnWrite is one write transaction inside a Writer: every change it makes
// has main revision rev and a sub revision in order of the changes. Reads
// through it see the changes made so far, as etcd's write transactions do.
type TxnWrite struct {
	w *Writer
	// beginRev is the revision just before this transaction's. The shard has
	// no write between its own revision and rev, so its state at beginRev is
	// its state now. (Revisions are cluster-wide: other shards may hold the
	// revisions in between.)
	beginRev int64
	rev      int64 // the revision this transaction writes at
	changes  int64
	// subs, when set, are the sub revisions of the changes in order: a
	// transaction across shards numbers its changes across all of them, as
	// one etcd would (the change log is one keyspace).
	subs []int64
}

// BeginTxn starts a write transaction at revision rev, which must be above
// the shard's revision.
func (w *Writer) BeginTxn(rev int64) *TxnWrite {
	return &TxnWrite{w: w, beginRev: rev - 1, rev: rev}
}

// End finishes the transaction. When it changed anything the shard's
// revision becomes its revision.
func (tw *TxnWrite) End() {
	if tw.changes > 0 {
		tw.w.rev = tw.rev
	}
}

// nextRev is the revision of the transaction's next change.
func (tw *TxnWrite) nextRev() Revision {
	if tw.subs != nil {
		return Revision{Main: tw.rev, Sub: tw.subs[tw.changes]}
	}
	return Revision{Main: tw.rev, Sub: tw.changes}
}

// Changed reports whether the transaction wrote anything.
func (tw *TxnWrite) Changed() bool { return tw.changes > 0 }

// Rev returns the revision before the transaction (etcd's TxnWrite.Rev).
func (tw *TxnWrite) Rev() int64 { return tw.beginRev }

// curRev is the revision reads inside the transaction report: the
// transaction's own once it has changed something.
func (tw *TxnWrite) curRev() int64 {
	if tw.changes > 0 {
		return tw.rev
	}
	return tw.beginRev
}

// FirstRev returns the compacted revision.
func (tw *TxnWrite) FirstRev() int64 { return tw.w.sh.CompactRev() }

// Range reads through the transaction, its own changes included.
func (tw *TxnWrite) Range(ctx context.Context, key, end []byte, ro RangeOptions) (*RangeResult, error) {
	cur := tw.curRev()
	v := ReadView{r: tw.w.b, shards: []*Shard{tw.w.sh}, span: *tw.w.curSpan(), rev: cur}
	return v.rangeKeys(ctx, key, end, cur, ro)
}

// latestOf returns the latest version of key: from the shard's cache (a
// direct writer's, which holds this batch's writes), from this batch (a
// Planner's writer), or from Pebble.
//
// A Planner's writers do not read the cache: they run on the coordinator's
// goroutine, and apply may write the cache meanwhile (once the lock of a
// slow plan expires, the shard applies writes again).
func (w *Writer) latestOf(key []byte) (latestVersion, error) {
	if w.direct {
		if v, known := w.sh.latest.get(key); known {
			return v, nil
		}
	} else if w.latest != nil {
		if v, ok := w.latest.get(key); ok {
			return v, nil
		}
	}
	prev, _, found, err := getVersion(w.b, key, math.MaxInt64)
	if err != nil || !found {
		return latestVersion{}, err
	}
	return latestVersion{exists: true, create: prev.create, ver: prev.ver, lease: prev.lease}, nil
}

func (w *Writer) setLatest(key []byte, v latestVersion) {
	if w.direct {
		w.sh.latest.set(key, v)
		w.written = append(w.written, key)
		return
	}
	if w.latest == nil {
		w.latest = &versionMap{}
	}
	w.latest.set(key, v)
}

// Put writes a new version of key and returns the revision it wrote at.
func (tw *TxnWrite) Put(key, value []byte, lease int64) (int64, error) {
	prev, err := tw.w.latestOf(key)
	if err != nil {
		return 0, err
	}
	found := prev.exists
	v := version{create: tw.rev, ver: 1, lease: lease, value: value}
	if found {
		v.create = prev.create
		v.ver = prev.ver + 1
	}
	sub := tw.nextRev()
	b := tw.w.b
	tw.w.buf = appendDataKey(tw.w.buf[:0], key, sub)
	tw.w.vbuf = appendValue(tw.w.vbuf[:0], v)
	if err := b.Set(tw.w.buf, tw.w.vbuf, nil); err != nil {
		return 0, err
	}
	tw.w.changes.add(sub, EventPut, key)
	if err := tw.moveLease(key, found, prev.lease, lease); err != nil {
		return 0, err
	}
	tw.w.setLatest(key, latestVersion{exists: true, create: v.create, ver: v.ver, lease: lease})
	if tw.w.capture {
		e := &struct {
			ev mvccpb.Event
			kv mvccpb.KeyValue
		}{}
		e.kv = mvccpb.KeyValue{Key: key, CreateRevision: v.create, ModRevision: tw.rev, Version: v.ver, Value: value, Lease: lease}
		e.ev.Type, e.ev.Kv = mvccpb.PUT, &e.kv
		tw.w.events = append(tw.w.events, &e.ev)
		tw.w.subs = append(tw.w.subs, sub.Sub)
	}
	tw.changes++
	return tw.rev, nil
}

// moveLease keeps the lease index in step with the key's lease.
func (tw *TxnWrite) moveLease(key []byte, existed bool, oldLease, newLease int64) error {
	if !existed {
		oldLease = 0
	}
	if oldLease == newLease {
		return nil
	}
	if oldLease != 0 {
		if err := tw.w.b.Delete(appendLeaseKey(nil, oldLease, key), nil); err != nil {
			return err
		}
	}
	if newLease != 0 {
		return tw.w.b.Set(appendLeaseKey(nil, newLease, key), nil, nil)
	}
	return nil
}

// DeleteRange deletes every key of [key, end) that exists and returns how
// many it deleted and the revision etcd reports for the operation.
func (tw *TxnWrite) DeleteRange(ctx context.Context, key, end []byte) (int64, int64, error) {
	rr, err := tw.Range(ctx, key, end, RangeOptions{KeysOnly: true})
	if err != nil {
		return 0, 0, err
	}
	for _, kv := range rr.KVs {
		if err := tw.delete(kv.Key, kv.Lease); err != nil {
			return 0, 0, err
		}
	}
	n := int64(len(rr.KVs))
	if n != 0 || tw.changes > 0 {
		return n, tw.rev, nil
	}
	return 0, tw.beginRev, nil
}

func (tw *TxnWrite) delete(key []byte, lease int64) error {
	sub := tw.nextRev()
	b := tw.w.b
	tw.w.buf = appendDataKey(tw.w.buf[:0], key, sub)
	if err := b.Set(tw.w.buf, appendValue(nil, version{tombstone: true}), nil); err != nil {
		return err
	}
	tw.w.changes.add(sub, EventDelete, key)
	if lease != 0 {
		if err := b.Delete(appendLeaseKey(nil, lease, key), nil); err != nil {
			return err
		}
	}
	tw.w.setLatest(key, latestVersion{})
	if tw.w.capture {
		tw.w.events = append(tw.w.events, &mvccpb.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: key, ModRevision: tw.rev}})
		tw.w.subs = append(tw.w.subs, sub.Sub)
	}
	tw.changes++
	return nil
}

// CompactRev returns the compacted revision including this batch.
func (w *Writer) CompactRev() int64 { return w.compact }
