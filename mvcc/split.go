package mvcc

import (
	"bytes"
	"encoding/binary"

	"github.com/cockroachdb/pebble/v2"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Split gives the keys [key, end) of the shard to a new shard childID. The
// data stays where it is (both shards live in this store): the batch writes
// the child's metadata (its span, the shard's revision and compacted
// revision; its revision again as the revision it was born at) and
// shortens the shard's span to [start, key), which readers see once the
// batch commits. The child's applied index is absent: its Raft
// group starts empty.
func (w *Writer) Split(key []byte, childID uint64) error {
	span := w.curSpan()
	if !span.contains(key) || bytes.Equal(key, span.start) {
		return ErrBadSplitKey
	}
	child := func(name string, value []byte) {
		_ = w.b.Set(appendMetaKey(nil, childID, name), value, nil)
	}
	child(metaSpan, encodeSpan(key, span.end))
	child(metaRev, binary.BigEndian.AppendUint64(nil, uint64(w.rev)))
	child(metaBorn, binary.BigEndian.AppendUint64(nil, uint64(w.rev)))
	if w.compact >= 0 {
		child(metaCompact, binary.BigEndian.AppendUint64(nil, uint64(w.compact)))
	}
	w.span = &keySpan{start: span.start, end: append([]byte(nil), key...)}
	w.setMeta(metaSpan, encodeSpan(w.span.start, w.span.end))
	return nil
}

// curSpan is the shard's span with this batch's split applied.
func (w *Writer) curSpan() *keySpan {
	if w.span != nil {
		return w.span
	}
	return w.sh.span.Load()
}

// Span returns the shard's span with this batch's split applied.
func (w *Writer) Span() (start, end []byte) {
	s := w.curSpan()
	return s.start, s.end
}

// ContainsTxn is Shard.ContainsTxn with this batch's split applied.
func (w *Writer) ContainsTxn(txn *pb.TxnRequest) bool { return w.curSpan().containsTxn(txn) }

// ContainsTxn reports whether every key a transaction compares, reads or
// writes (nested transactions and both branches included) is in the
// shard's span.
func (sh *Shard) ContainsTxn(txn *pb.TxnRequest) bool {
	return sh.span.Load().containsTxn(txn)
}

func (s *keySpan) containsTxn(rt *pb.TxnRequest) bool {
	for _, c := range rt.Compare {
		if !s.containsRange(c.Key, c.RangeEnd) {
			return false
		}
	}
	for _, branch := range [][]*pb.RequestOp{rt.Success, rt.Failure} {
		for _, op := range branch {
			var ok bool
			switch tv := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				ok = s.containsRange(tv.RequestRange.Key, tv.RequestRange.RangeEnd)
			case *pb.RequestOp_RequestPut:
				ok = s.contains(tv.RequestPut.Key)
			case *pb.RequestOp_RequestDeleteRange:
				ok = s.containsRange(tv.RequestDeleteRange.Key, tv.RequestDeleteRange.RangeEnd)
			case *pb.RequestOp_RequestTxn:
				ok = s.containsTxn(tv.RequestTxn)
			default:
				ok = true
			}
			if !ok {
				return false
			}
		}
	}
	return true
}

// containsRange reports whether the etcd range [key, end) lies in the
// span: end empty is the key alone, "\x00" every key from key on, and a
// range that holds no key (end at or before key) is the key alone.
func (s *keySpan) containsRange(key, end []byte) bool {
	if !s.contains(key) {
		return false
	}
	switch {
	case len(end) == 0:
		return true
	case len(end) == 1 && end[0] == 0:
		return len(s.end) == 0
	case bytes.Compare(end, key) <= 0:
		return true
	}
	return len(s.end) == 0 || bytes.Compare(end, s.end) <= 0
}

// SpanOf returns the span recorded for shard id (a split records its
// child's before the child's replica opens); ok is false when none is.
func (s *Store) SpanOf(id uint64) (start, end []byte, ok bool, err error) {
	v, ok, err := s.GetMeta(id, metaSpan)
	if err != nil || !ok {
		return nil, nil, false, err
	}
	start, end, err = decodeSpan(v)
	return start, end, err == nil, err
}

// ContainsRange reports whether the etcd range [key, end) lies in the
// view's span.
func (v *ReadView) ContainsRange(key, end []byte) bool { return v.span.containsRange(key, end) }

// WholeKeySpace reports whether the view spans every key.
func (v *ReadView) WholeKeySpace() bool { return len(v.span.start) == 0 && len(v.span.end) == 0 }

// ApproxSize returns the approximate bytes the shard's versions take on
// disk.
func (sh *Shard) ApproxSize() (uint64, error) {
	lower, upper := dataSpanBounds(sh.Span())
	return sh.store.db.EstimateDiskUsage(lower, upper)
}

// MiddleKey returns a key that splits the shard's keys (every key with a
// version, deleted or not) into two halves, or nil when the shard has fewer
// than two keys. It reads every key of the shard twice: call it rarely.
func (sh *Shard) MiddleKey() ([]byte, error) {
	lower, upper := dataSpanBounds(sh.Span())
	var n int
	if err := sh.eachKey(lower, upper, func([]byte) bool { n++; return true }); err != nil {
		return nil, err
	}
	if n < 2 {
		return nil, nil
	}
	var mid []byte
	i := 0
	err := sh.eachKey(lower, upper, func(k []byte) bool {
		if i == n/2 {
			mid = append([]byte(nil), k...)
			return false
		}
		i++
		return true
	})
	return mid, err
}

// eachKey calls fn with every user key in [lower, upper) (Pebble bounds),
// once per key, until fn returns false.
func (sh *Shard) eachKey(lower, upper []byte, fn func(userKey []byte) bool) error {
	it, err := sh.store.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	defer it.Close()
	for valid := it.First(); valid; valid = it.NextPrefix() {
		userKey, _, ok := decodeDataKey(it.Key())
		if !ok {
			return errCorruptValue
		}
		if !fn(userKey) {
			break
		}
	}
	return it.Error()
}

// FlushIfMemTableOver flushes the memtables when they hold more than n
// bytes, so that ApproxSize (which sees only what is on disk) counts them.
func (s *Store) FlushIfMemTableOver(n int64) error {
	if int64(s.db.Metrics().MemTable.Size) <= n {
		return nil
	}
	return s.db.Flush()
}

// Store returns the store the shard lives in.
func (sh *Shard) Store() *Store { return sh.store }
