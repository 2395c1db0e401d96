package mvcc

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// KeyValueHash is the result of HashKV.
type KeyValueHash struct {
	Hash            uint32
	CompactRevision int64
	Revision        int64
}

// HashKV computes etcd's HashKV of the shard at rev (0: the current
// revision), bit for bit: a CRC-32C over "key", then, in revision order, each
// stored version's etcd backend key (main, '_', sub, and 't' for a tombstone)
// and its marshaled mvccpb.KeyValue. It covers every version above the
// compacted revision up to rev, and of the versions at or below the compacted
// revision those etcd still holds and hashes: a key's newest version at or
// below the compacted revision, when it is also its newest at or below rev
// (or when no key is alive at rev at all, a quirk of etcd's Keep).
func (sh *Shard) HashKV(ctx context.Context, rev int64) (KeyValueHash, int64, error) {
	return sh.View().HashKV(ctx, rev)
}

// HashKV is Shard.HashKV over the view's span (one shard or several), with
// the view's revision as the current one.
func (v *ReadView) HashKV(ctx context.Context, rev int64) (KeyValueHash, int64, error) {
	it, err := v.r.NewIterWithContext(ctx, &pebble.IterOptions{})
	if err != nil {
		return KeyValueHash{}, 0, err
	}
	defer it.Close()
	compactRev, currentRev := v.compactRev(), v.rev
	switch {
	case rev > 0 && rev < compactRev:
		return KeyValueHash{}, 0, ErrCompacted
	case rev > 0 && rev > currentRev:
		return KeyValueHash{}, currentRev, ErrFutureRev
	case rev == 0:
		rev = currentRev
	}

	type entry struct {
		rev Revision
		kv  *mvccpb.KeyValue
		// compacted marks a version at or below the compacted revision;
		// newest that it is also the key's newest at or below rev.
		compacted, newest bool
		tombstone         bool
	}
	var entries []entry
	anyAlive := false
	it.SetBounds(dataSpanBounds(v.span.start, v.span.end))
	var lastKey []byte
	sawNewest, sawCompacted := false, false
	for valid := it.First(); valid; valid = it.Next() {
		userKey, r, ok := decodeDataKey(it.Key())
		if !ok {
			return KeyValueHash{}, 0, errCorruptValue
		}
		if r.Main > rev {
			continue
		}
		if !slices.Equal(userKey, lastKey) {
			lastKey = append(lastKey[:0], userKey...)
			sawNewest, sawCompacted = false, false
		}
		newest := !sawNewest
		sawNewest = true
		if r.Main <= compactRev {
			// Only the newest version at or below the compacted revision is
			// still stored, and not when it is a tombstone.
			if sawCompacted {
				continue
			}
			sawCompacted = true
		}
		raw, err := it.ValueAndErr()
		if err != nil {
			return KeyValueHash{}, 0, err
		}
		v, err := decodeValue(raw)
		if err != nil {
			return KeyValueHash{}, 0, err
		}
		if newest && !v.tombstone {
			anyAlive = true
		}
		if r.Main <= compactRev && v.tombstone {
			continue
		}
		kv := &mvccpb.KeyValue{Key: append([]byte(nil), userKey...)}
		if !v.tombstone {
			kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease = v.create, r.Main, v.ver, v.lease
			kv.Value = append([]byte(nil), v.value...)
		}
		entries = append(entries, entry{rev: r, kv: kv, compacted: r.Main <= compactRev, newest: newest, tombstone: v.tombstone})
	}
	if err := it.Error(); err != nil {
		return KeyValueHash{}, 0, err
	}
	slices.SortFunc(entries, func(a, b entry) int {
		if a.rev.GreaterThan(b.rev) {
			return 1
		}
		if b.rev.GreaterThan(a.rev) {
			return -1
		}
		return 0
	})

	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	h.Write([]byte("key"))
	var k []byte
	for _, e := range entries {
		if e.compacted && anyAlive && !e.newest {
			continue
		}
		k = binary.BigEndian.AppendUint64(k[:0], uint64(e.rev.Main))
		k = append(k, '_')
		k = binary.BigEndian.AppendUint64(k, uint64(e.rev.Sub))
		if e.tombstone {
			k = append(k, 't')
		}
		v, err := proto.Marshal(e.kv)
		if err != nil {
			return KeyValueHash{}, 0, err
		}
		h.Write(k)
		h.Write(v)
	}
	return KeyValueHash{Hash: h.Sum32(), CompactRevision: compactRev, Revision: rev}, currentRev, nil
}
