package mvcc

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Compact drops the shard's history at or below rev: per key it keeps the
// newest version at or below rev unless that is a tombstone, and it drops the
// change log at or below rev. The caller has checked rev against the current
// and compacted revisions, as etcd does.
//
// Only keys changed since the previous compaction can hold versions to drop:
// every other key was already reduced to one version. So compaction walks the
// change log from the previous compacted revision to rev, and its cost is the
// number of changes in between.
func (w *Writer) Compact(rev int64) error {
	prev := w.compact
	// Readers check the compacted revision after they open their iterator:
	// publishing it before the deletes commit keeps them from reading a
	// revision whose versions are going away.
	w.sh.compact.Store(rev)
	w.compact = rev
	w.setMeta(metaCompact, binary.BigEndian.AppendUint64(nil, uint64(rev)))
	if err := w.flushChanges(); err != nil {
		return err
	}

	lower := appendChangeKey(nil, Revision{Main: max(prev, 0)})
	upper := appendChangeKey(nil, Revision{Main: rev + 1})
	it, err := w.b.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	var keys [][]byte
	for valid := it.First(); valid; valid = it.Next() {
		value, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return err
		}
		_, userKey, err := decodeChange(value)
		if err != nil {
			it.Close()
			return err
		}
		if !w.sh.Contains(userKey) {
			continue
		}
		keys = append(keys, append([]byte(nil), userKey...))
		if r, _ := decodeChangeKey(it.Key()); r.Main < rev {
			if err := w.b.Delete(it.Key(), nil); err != nil {
				it.Close()
				return err
			}
		}
	}
	if err := it.Close(); err != nil {
		return err
	}
	slices.SortFunc(keys, bytes.Compare)
	keys = slices.CompactFunc(keys, bytes.Equal)
	for _, k := range keys {
		if err := w.compactKey(k, rev); err != nil {
			return err
		}
	}
	return nil
}

// compactKey deletes the versions of userKey that no read at or above rev
// can see.
func (w *Writer) compactKey(userKey []byte, rev int64) error {
	it, err := w.b.NewIter(&pebble.IterOptions{
		LowerBound: appendDataPrefix(nil, userKey),
		UpperBound: nextPrefix(userKey),
	})
	if err != nil {
		return err
	}
	defer it.Close()
	first := true
	for valid := it.SeekGE(appendDataKey(nil, userKey, Revision{Main: rev, Sub: math.MaxInt64})); valid; valid = it.Next() {
		if first {
			first = false
			value, err := it.ValueAndErr()
			if err != nil {
				return err
			}
			if !isTombstone(value) {
				continue // the version reads at rev see
			}
		}
		if err := w.b.Delete(it.Key(), nil); err != nil {
			return err
		}
	}
	return it.Error()
}
