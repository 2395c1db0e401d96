package mvcc

import (
	"bytes"
	"context"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// RangeOptions are the options of one mvcc range read.
type RangeOptions struct {
	// Limit caps the number of returned keys; 0 means no limit.
	Limit int64
	// Rev is the revision to read at; 0 (or less) means the view's revision.
	Rev int64
	// CountOnly returns only the number of keys.
	CountOnly bool
	// KeysOnly leaves values out.
	KeysOnly bool
	// WithTotalCount keeps counting past Limit so Count is the number of keys
	// in the range; otherwise the scan stops at Limit.
	WithTotalCount bool
}

// RangeResult is what a range read found.
type RangeResult struct {
	KVs   []*mvccpb.KeyValue
	Count int
	// Rev is the view's current revision, the one etcd reports in headers.
	Rev int64
}

// ReadView reads one shard, or several adjacent shards of the store, at a
// point in time: its current revision and its span are fixed when the view
// is made, and every read sees the versions at or below the revision it
// asks for. Writes applied after the view was made carry higher revisions
// and stay invisible, so a view needs no Pebble snapshot. A split while the
// view is in use does not change what it reads: the data stays in the
// store, and the view keeps the span it was made with.
type ReadView struct {
	r      pebble.Reader
	shards []*Shard // in key order; their compactions bound the view's reads
	span   keySpan
	rev    int64
}

// Rev returns the view's current revision.
func (v *ReadView) Rev() int64 { return v.rev }

// FirstRev returns the compacted revision: reads below it fail.
func (v *ReadView) FirstRev() int64 { return v.compactRev() }

// compactRev is the highest compacted revision of the view's shards: below
// it, some shard's history is gone.
func (v *ReadView) compactRev() int64 {
	rev := v.shards[0].CompactRev()
	for _, sh := range v.shards[1:] {
		rev = max(rev, sh.CompactRev())
	}
	return rev
}

// ViewAcross returns a view of adjacent shards of one store, in key order,
// whose current revision is rev: a read across shards at one revision. The
// caller ensures that every write of each shard at or below rev is
// applied. It fails with ErrNotAdjacent unless each shard's span starts
// where the previous one's ends.
func ViewAcross(rev int64, shards []*Shard) (*ReadView, error) {
	if len(shards) == 0 {
		return nil, ErrNotAdjacent
	}
	first := shards[0].span.Load()
	span := keySpan{start: first.start, end: first.end}
	for _, sh := range shards[1:] {
		next := sh.span.Load()
		if len(span.end) == 0 || !bytes.Equal(span.end, next.start) {
			return nil, ErrNotAdjacent
		}
		span.end = next.end
	}
	return &ReadView{r: shards[0].store.db, shards: shards, span: span, rev: rev}, nil
}

// Range reads [key, end) at ro.Rev. An empty end reads the single key key; a
// zero-length non-nil end reads every key from key on (etcd's "\x00").
func (v *ReadView) Range(ctx context.Context, key, end []byte, ro RangeOptions) (*RangeResult, error) {
	return v.rangeKeys(ctx, key, end, v.rev, ro)
}

// rangeKeys is etcd's range read: revision checks, then the newest version
// at or below the read revision of every key in range that is not deleted.
func (v *ReadView) rangeKeys(ctx context.Context, key, end []byte, curRev int64, ro RangeOptions) (*RangeResult, error) {
	rev := ro.Rev
	if rev > curRev {
		return &RangeResult{Count: -1, Rev: curRev}, ErrFutureRev
	}
	if rev <= 0 {
		rev = curRev
	}
	lower, upper, ok := v.bounds(key, end)
	if !ok {
		if rev < v.compactRev() {
			return &RangeResult{Count: -1}, ErrCompacted
		}
		return &RangeResult{Rev: curRev}, nil
	}
	it, err := v.r.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	// The iterator is a consistent snapshot. Compaction publishes its
	// revision before it deletes versions, so checking after the iterator
	// exists proves the iterator still holds every version rev needs.
	if rev < v.compactRev() {
		return &RangeResult{Count: -1}, ErrCompacted
	}

	res := &RangeResult{Rev: curRev}
	limit := int(ro.Limit)
	err = scanVersions(it, lower, rev, func(userKey []byte, modRev int64, value []byte) (bool, error) {
		reachedLimit := limit > 0 && len(res.KVs) >= limit
		if reachedLimit && !ro.WithTotalCount {
			return false, nil
		}
		res.Count++
		if ro.CountOnly || reachedLimit {
			return true, nil
		}
		kv, err := makeKeyValue(userKey, modRev, value, ro.KeysOnly)
		if err != nil {
			return false, err
		}
		res.KVs = append(res.KVs, kv)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// bounds clips the user-key range [key, end) to the view's span and returns
// its Pebble bounds; ok is false when nothing of the range is in the span.
func (v *ReadView) bounds(key, end []byte) (lower, upper []byte, ok bool) {
	start, stop := v.span.start, v.span.end
	if end == nil {
		// A single key.
		if !v.span.contains(key) {
			return nil, nil, false
		}
		return appendDataPrefix(nil, key), nextPrefix(key), true
	}
	if bytes.Compare(key, start) < 0 {
		key = start
	}
	if len(stop) > 0 && (len(end) == 0 || bytes.Compare(end, stop) > 0) {
		end = stop
	}
	if len(end) > 0 && bytes.Compare(key, end) >= 0 {
		return nil, nil, false
	}
	lower, upper = dataSpanBounds(key, end)
	return lower, upper, true
}

// scanVersions visits, in key order, the newest version at or below rev of
// every key from lower on that is not a tombstone at rev. fn returns false to
// stop. The slices passed to fn are only valid during the call.
func scanVersions(it *pebble.Iterator, lower []byte, rev int64, fn func(userKey []byte, modRev int64, value []byte) (bool, error)) error {
	var seek []byte
	valid := it.SeekGE(lower)
	for valid {
		userKey, r, ok := decodeDataKey(it.Key())
		if !ok {
			return fmt.Errorf("mvcc: unexpected key %q in data keyspace", it.Key())
		}
		if r.Main > rev {
			// Skip the versions newer than rev: they sort first.
			seek = appendDataKey(seek[:0], userKey, Revision{Main: rev, Sub: math.MaxInt64})
			valid = it.SeekGE(seek)
			continue
		}
		value, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if !isTombstone(value) {
			more, err := fn(userKey, r.Main, value)
			if err != nil || !more {
				return err
			}
		}
		valid = it.NextPrefix()
	}
	return it.Error()
}

// makeKeyValue builds the etcd KeyValue of a stored version, copying out of
// Pebble's buffers.
func makeKeyValue(userKey []byte, modRev int64, value []byte, keysOnly bool) (*mvccpb.KeyValue, error) {
	v, err := decodeValue(value)
	if err != nil {
		return nil, err
	}
	kv := &mvccpb.KeyValue{
		Key:            append([]byte(nil), userKey...),
		CreateRevision: v.create,
		ModRevision:    modRev,
		Version:        v.ver,
		Lease:          v.lease,
	}
	if !keysOnly {
		kv.Value = append([]byte(nil), v.value...)
	}
	return kv, nil
}

// getVersion returns the newest version of userKey at or below rev, and
// whether the key exists (is not deleted) at rev.
func getVersion(r pebble.Reader, userKey []byte, rev int64) (v version, modRev int64, found bool, err error) {
	lower := appendDataPrefix(nil, userKey)
	seek := appendDataKey(nil, userKey, Revision{Main: rev, Sub: math.MaxInt64})
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: nextPrefix(userKey)})
	if err != nil {
		return version{}, 0, false, err
	}
	defer it.Close()
	// A prefix seek lets Pebble skip sstables whose bloom filter does not
	// hold the key: most lookups of a key that was never written.
	if !it.SeekPrefixGE(seek) {
		return version{}, 0, false, it.Error()
	}
	_, kr, ok := decodeDataKey(it.Key())
	if !ok {
		return version{}, 0, false, fmt.Errorf("mvcc: unexpected key %q in data keyspace", it.Key())
	}
	raw, err := it.ValueAndErr()
	if err != nil {
		return version{}, 0, false, err
	}
	v, err = decodeValue(raw)
	if err != nil || v.tombstone {
		return version{}, 0, false, err
	}
	v.value = append([]byte(nil), v.value...)
	return v, kr.Main, true, nil
}

// nextPrefix returns the bare prefix of the smallest user key after userKey:
// an exclusive upper bound for userKey's versions.
func nextPrefix(userKey []byte) []byte {
	b := make([]byte, 0, len(userKey)+3)
	b = append(b, keyspaceData)
	b = append(b, userKey...)
	return append(b, 0x00, sentinel)
}
