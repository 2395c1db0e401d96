package mvcc

import (
	"encoding/binary"
	"errors"
)

// Value kinds, the first byte of a data value.
const (
	kindPut       = 0
	kindTombstone = 1
)

// Change log event types, the first byte of a change log value.
const (
	EventPut    = 0
	EventDelete = 1
)

var errCorruptValue = errors.New("mvcc: corrupt value")

// version is the stored form of one version of a key; its mod revision is in
// the Pebble key.
type version struct {
	tombstone bool
	create    int64
	ver       int64
	lease     int64
	value     []byte
}

// appendValue encodes v: kind, create revision, version, lease, value bytes.
func appendValue(dst []byte, v version) []byte {
	if v.tombstone {
		return append(dst, kindTombstone)
	}
	dst = append(dst, kindPut)
	dst = binary.AppendUvarint(dst, uint64(v.create))
	dst = binary.AppendUvarint(dst, uint64(v.ver))
	dst = binary.AppendVarint(dst, v.lease)
	return append(dst, v.value...)
}

// decodeValue decodes a data value. The returned value aliases b.
func decodeValue(b []byte) (version, error) {
	if len(b) == 0 {
		return version{}, errCorruptValue
	}
	switch b[0] {
	case kindTombstone:
		return version{tombstone: true}, nil
	case kindPut:
	default:
		return version{}, errCorruptValue
	}
	b = b[1:]
	create, n := binary.Uvarint(b)
	if n <= 0 {
		return version{}, errCorruptValue
	}
	b = b[n:]
	ver, n := binary.Uvarint(b)
	if n <= 0 {
		return version{}, errCorruptValue
	}
	b = b[n:]
	lease, n := binary.Varint(b)
	if n <= 0 {
		return version{}, errCorruptValue
	}
	return version{create: int64(create), ver: int64(ver), lease: lease, value: b[n:]}, nil
}

// isTombstone reports whether a data value is a tombstone without decoding it.
func isTombstone(b []byte) bool { return len(b) > 0 && b[0] == kindTombstone }

// appendChange encodes a change log value: event type, user key.
func appendChange(dst []byte, event byte, userKey []byte) []byte {
	dst = append(dst, event)
	return append(dst, userKey...)
}

func decodeChange(b []byte) (event byte, userKey []byte, err error) {
	if len(b) == 0 || b[0] > EventDelete {
		return 0, nil, errCorruptValue
	}
	return b[0], b[1:], nil
}
