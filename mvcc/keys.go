package mvcc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"
)

// Keyspace bytes: the first byte of every Pebble key names what it holds.
const (
	keyspaceData   = 'd' // user key, revision → value or tombstone
	keyspaceChange = 'c' // revision → event type, user key
	keyspaceLease  = 'l' // lease id, user key → nothing
	keyspaceLock   = 'x' // 2PC intents (reserved)
	keyspaceMeta   = 'm' // shard id, name → shard metadata
)

// sentinel ends every key prefix. A bare prefix (no version) ends in it, so
// Split can tell a prefix from a versioned key by the last byte alone.
const sentinel = 0x00

// versionLen is the size of an encoded (main, sub) revision; a versioned key
// ends with the version and one byte holding versionedSuffixLen. A change
// log key is the keyspace byte, the version and the sentinel.
const (
	versionLen         = 16
	changeKeyLen       = 2 + versionLen
	versionedSuffixLen = versionLen + 1
)

// Revision identifies one change: Main is the revision of the write
// transaction, Sub the position of the change inside it.
type Revision struct {
	Main int64
	Sub  int64
}

// GreaterThan reports whether r comes after o.
func (r Revision) GreaterThan(o Revision) bool {
	if r.Main != o.Main {
		return r.Main > o.Main
	}
	return r.Sub > o.Sub
}

// appendDataPrefix appends the prefix of userKey's versions: 'd', the user
// key, the sentinel. The bare prefix sorts before every version of the key.
func appendDataPrefix(dst, userKey []byte) []byte {
	dst = append(dst, keyspaceData)
	dst = append(dst, userKey...)
	return append(dst, sentinel)
}

// appendVersion appends rev so that newer revisions sort first, then the
// suffix length byte.
func appendVersion(dst []byte, rev Revision) []byte {
	dst = binary.BigEndian.AppendUint64(dst, ^uint64(rev.Main))
	dst = binary.BigEndian.AppendUint64(dst, ^uint64(rev.Sub))
	return append(dst, versionedSuffixLen)
}

// appendDataKey appends the Pebble key of userKey's version at rev.
func appendDataKey(dst, userKey []byte, rev Revision) []byte {
	return appendVersion(appendDataPrefix(dst, userKey), rev)
}

// decodeDataKey splits a versioned data key into its user key and revision.
func decodeDataKey(k []byte) (userKey []byte, rev Revision, ok bool) {
	n := len(k)
	if n < 2+versionedSuffixLen || k[0] != keyspaceData || k[n-1] != versionedSuffixLen || k[n-versionedSuffixLen-1] != sentinel {
		return nil, Revision{}, false
	}
	v := k[n-versionedSuffixLen : n-1]
	rev.Main = int64(^binary.BigEndian.Uint64(v[:8]))
	rev.Sub = int64(^binary.BigEndian.Uint64(v[8:]))
	return k[1 : n-versionedSuffixLen-1], rev, true
}

// dataSpanBounds returns the Pebble bounds of the user-key span [start, end);
// an empty end means no upper bound.
func dataSpanBounds(start, end []byte) (lower, upper []byte) {
	lower = appendDataPrefix(nil, start)
	if len(end) == 0 {
		upper = []byte{keyspaceData + 1}
	} else {
		upper = appendDataPrefix(nil, end)
	}
	return lower, upper
}

// appendChangeKey appends the change log key of rev. Fixed width big endian
// makes byte order revision order.
func appendChangeKey(dst []byte, rev Revision) []byte {
	dst = append(dst, keyspaceChange)
	dst = binary.BigEndian.AppendUint64(dst, uint64(rev.Main))
	dst = binary.BigEndian.AppendUint64(dst, uint64(rev.Sub))
	return append(dst, sentinel)
}

func decodeChangeKey(k []byte) (Revision, bool) {
	if len(k) != changeKeyLen || k[0] != keyspaceChange {
		return Revision{}, false
	}
	return Revision{
		Main: int64(binary.BigEndian.Uint64(k[1:9])),
		Sub:  int64(binary.BigEndian.Uint64(k[9:17])),
	}, true
}

// appendLeaseKey appends the lease index key of (lease, userKey).
func appendLeaseKey(dst []byte, lease int64, userKey []byte) []byte {
	dst = append(dst, keyspaceLease)
	dst = binary.BigEndian.AppendUint64(dst, uint64(lease))
	dst = append(dst, userKey...)
	return append(dst, sentinel)
}

// appendMetaKey appends the key of one metadata field of a shard.
func appendMetaKey(dst []byte, shardID uint64, name string) []byte {
	dst = append(dst, keyspaceMeta)
	dst = binary.BigEndian.AppendUint64(dst, shardID)
	dst = append(dst, name...)
	return append(dst, sentinel)
}

// metaBounds returns the Pebble bounds of every metadata key of a shard.
func metaBounds(shardID uint64) (lower, upper []byte) {
	lower = append([]byte{keyspaceMeta}, binary.BigEndian.AppendUint64(nil, shardID)...)
	if shardID == math.MaxUint64 {
		return lower, []byte{keyspaceMeta + 1}
	}
	upper = append([]byte{keyspaceMeta}, binary.BigEndian.AppendUint64(nil, shardID+1)...)
	return lower, upper
}

// Split returns the length of k's prefix: everything but the version of a
// versioned data key, all of any other key.
func Split(k []byte) int {
	n := len(k)
	if n > versionedSuffixLen && k[n-1] == versionedSuffixLen && k[n-versionedSuffixLen-1] == sentinel {
		return n - versionedSuffixLen
	}
	return n
}

// Compare orders keys by prefix, then by suffix. Suffixes compare bytewise:
// the empty suffix of a bare prefix first, then versions newest first.
func Compare(a, b []byte) int {
	an, bn := Split(a), Split(b)
	if c := bytes.Compare(a[:an], b[:bn]); c != 0 {
		return c
	}
	return bytes.Compare(a[an:], b[bn:])
}

// Comparer is the Pebble comparer of Basalt's key layout. Its Split lets
// SeekPrefixGE, NextPrefix and bloom filters work per user key.
var Comparer = &pebble.Comparer{
	Compare: Compare,
	Equal: func(a, b []byte) bool {
		return bytes.Equal(a, b)
	},
	AbbreviatedKey: func(k []byte) uint64 {
		return pebble.DefaultComparer.AbbreviatedKey(k[:Split(k)])
	},
	// Shortening keys for index blocks is optional; keeping them whole keeps
	// every key Pebble sees in our encoding.
	Separator: func(dst, a, _ []byte) []byte {
		return append(dst, a...)
	},
	Successor: func(dst, a []byte) []byte {
		return append(dst, a...)
	},
	ImmediateSuccessor: func(dst, a []byte) []byte {
		// a is a prefix; the next prefix appends one zero byte to the user
		// key, before the sentinel.
		if n := len(a); n > 0 && a[0] == keyspaceData && a[n-1] == sentinel {
			dst = append(dst, a[:n-1]...)
			return append(dst, 0x00, sentinel)
		}
		return append(append(dst, a...), 0x00)
	},
	Split:                Split,
	ComparePointSuffixes: bytes.Compare,
	CompareRangeSuffixes: bytes.Compare,
	FormatKey:            formatKey,
	Name:                 "basalt.mvcc.v1",
}

func formatKey(k []byte) fmt.Formatter {
	if userKey, rev, ok := decodeDataKey(k); ok {
		return keyFormatter(fmt.Sprintf("d/%q@%d.%d", userKey, rev.Main, rev.Sub))
	}
	if rev, ok := decodeChangeKey(k); ok {
		return keyFormatter(fmt.Sprintf("c/%d.%d", rev.Main, rev.Sub))
	}
	return keyFormatter(fmt.Sprintf("%q", k))
}

type keyFormatter string

func (f keyFormatter) Format(s fmt.State, _ rune) { fmt.Fprint(s, string(f)) }
