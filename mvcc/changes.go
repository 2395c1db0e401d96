package mvcc

import (
	"context"
	"errors"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Changes returns the shard's events in revisions [from, to], in revision
// order (sub revisions in order), read from the change log: a put carries
// the version it wrote, a delete the key and its revision, as etcd's watch
// events do. It returns at most maxRevs distinct revisions; more is the
// first revision left out, 0 when none was. It fails with ErrCompacted when
// from is below the compacted revision (the change log at the compacted
// revision itself is kept).
func (sh *Shard) Changes(ctx context.Context, from, to int64, maxRevs int) (evs []*mvccpb.Event, more int64, err error) {
	evs, _, more, err = ChangesIn(ctx, []*Shard{sh}, from, to, maxRevs)
	return evs, more, err
}

// ChangesIn is Changes of several shards of one store at once, in
// revision and sub revision order (the order one etcd's watch reports a
// transaction's events in, also when the transaction wrote to several of
// the shards), with the events' sub revisions. It fails with ErrCompacted
// when from is below a shard's compacted revision.
func ChangesIn(ctx context.Context, shards []*Shard, from, to int64, maxRevs int) (evs []*mvccpb.Event, subs []int64, more int64, err error) {
	compacted := func() bool {
		for _, sh := range shards {
			if from < sh.CompactRev() {
				return true
			}
		}
		return false
	}
	if compacted() {
		return nil, nil, 0, ErrCompacted
	}
	if to < from {
		return nil, nil, 0, nil
	}
	db := shards[0].store.db
	it, err := db.NewIterWithContext(ctx, &pebble.IterOptions{
		LowerBound: appendChangeKey(nil, Revision{Main: from}),
		UpperBound: appendChangeKey(nil, Revision{Main: to + 1}),
	})
	if err != nil {
		return nil, nil, 0, err
	}
	defer it.Close()
	revs := 0
	last := int64(0)
	var dkey []byte
	for valid := it.First(); valid; valid = it.Next() {
		rev, ok := decodeChangeKey(it.Key())
		if !ok {
			return nil, nil, 0, errCorruptValue
		}
		raw, err := it.ValueAndErr()
		if err != nil {
			return nil, nil, 0, err
		}
		typ, userKey, err := decodeChange(raw)
		if err != nil {
			return nil, nil, 0, err
		}
		if !slices.ContainsFunc(shards, func(sh *Shard) bool { return sh.Contains(userKey) }) {
			continue
		}
		if rev.Main != last {
			if revs == maxRevs {
				return evs, subs, rev.Main, nil
			}
			revs++
			last = rev.Main
		}
		key := append([]byte(nil), userKey...)
		if typ == EventDelete {
			evs = append(evs, &mvccpb.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: key, ModRevision: rev.Main}})
			subs = append(subs, rev.Sub)
			continue
		}
		dkey = appendDataKey(dkey[:0], userKey, rev)
		v, closer, err := db.Get(dkey)
		if errors.Is(err, pebble.ErrNotFound) {
			// Compacted away while we read.
			return nil, nil, 0, ErrCompacted
		}
		if err != nil {
			return nil, nil, 0, err
		}
		kv, err := makeKeyValue(key, rev.Main, v, false)
		closer.Close()
		if err != nil {
			return nil, nil, 0, err
		}
		evs = append(evs, &mvccpb.Event{Type: mvccpb.PUT, Kv: kv})
		subs = append(subs, rev.Sub)
	}
	if err := it.Error(); err != nil {
		return nil, nil, 0, err
	}
	if compacted() {
		return nil, nil, 0, ErrCompacted
	}
	return evs, subs, 0, nil
}

// PrevKV returns key's value just before rev (what a watch event's prev_kv
// holds), or nil when the key did not exist or that revision is compacted.
func (sh *Shard) PrevKV(key []byte, rev int64) (*mvccpb.KeyValue, error) {
	if rev-1 < sh.CompactRev() {
		return nil, nil
	}
	v, modRev, found, err := getVersion(sh.store.db, key, rev-1)
	if err != nil || !found {
		return nil, err
	}
	kv := &mvccpb.KeyValue{Key: append([]byte(nil), key...), CreateRevision: v.create, ModRevision: modRev, Version: v.ver, Lease: v.lease, Value: v.value}
	if rev-1 < sh.CompactRev() {
		return nil, nil // compacted while we read
	}
	return kv, nil
}
