package mvcc

import (
	"encoding/binary"

	"github.com/cockroachdb/pebble/v2"
)

// AllowAllLeases is the LeaseChecker of apply. Leases live in the meta
// group, and apply must depend on nothing but its shard's log; whether a
// put's lease exists is checked before the put is sequenced (and a lease's
// revocation waits for the puts sequenced before it).
var AllowAllLeases LeaseChecker = allowAllLeases{}

type allowAllLeases struct{}

func (allowAllLeases) LeaseExists(int64) bool { return true }

// LeaseKeys returns the shard's keys attached to lease, in key order.
func (sh *Shard) LeaseKeys(lease int64) ([][]byte, error) {
	lower := binary.BigEndian.AppendUint64([]byte{keyspaceLease}, uint64(lease))
	upper := binary.BigEndian.AppendUint64([]byte{keyspaceLease}, uint64(lease)+1)
	if uint64(lease) == ^uint64(0) {
		upper = []byte{keyspaceLease + 1}
	}
	it, err := sh.store.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var keys [][]byte
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		if len(k) < 10 {
			return nil, errCorruptValue
		}
		userKey := k[9 : len(k)-1]
		if sh.Contains(userKey) {
			keys = append(keys, append([]byte(nil), userKey...))
		}
	}
	return keys, it.Error()
}

// LeaseIDs returns the leases that have keys in the shard. The lease index
// is the store's, shared by its shards, so the scan skips: for each lease
// it seeks to the shard's first key, and then to the next lease. It costs
// a few seeks per lease, however many keys the leases have.
func (sh *Shard) LeaseIDs() ([]int64, error) {
	it, err := sh.store.db.NewIter(&pebble.IterOptions{LowerBound: []byte{keyspaceLease}, UpperBound: []byte{keyspaceLease + 1}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	span := sh.span.Load()
	var ids []int64
	for valid := it.First(); valid; {
		k := it.Key()
		if len(k) < 10 {
			return nil, errCorruptValue
		}
		id, userKey := binary.BigEndian.Uint64(k[1:9]), k[9:len(k)-1]
		if string(userKey) < string(span.start) {
			valid = it.SeekGE(appendLeaseKey(nil, int64(id), span.start))
			continue
		}
		if span.contains(userKey) {
			ids = append(ids, int64(id))
		}
		if id == ^uint64(0) {
			break
		}
		valid = it.SeekGE(binary.BigEndian.AppendUint64([]byte{keyspaceLease}, id+1))
	}
	return ids, it.Error()
}
