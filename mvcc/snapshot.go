package mvcc

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cockroachdb/pebble/v2"
)

// A snapshot is a stream of records: key length, key, value length, value
// (lengths as uvarints), ended by a zero key length. It holds the Pebble
// keys of one replica's state, so recovering it rebuilds exactly that state.

// selector picks the Pebble keys of one part of a replica's state.
type selector struct {
	lower, upper []byte
	// keep filters keys inside the bounds; nil keeps all.
	keep func(key, value []byte) bool
}

// selectors returns what a data shard's snapshot holds: its versions, the
// change log and lease index entries of its keys, and its metadata.
func (sh *Shard) selectors() []selector {
	dl, du := dataSpanBounds(sh.Span())
	ml, mu := metaBounds(sh.id)
	return []selector{
		{lower: dl, upper: du},
		{lower: []byte{keyspaceChange}, upper: []byte{keyspaceChange + 1}, keep: func(_, value []byte) bool {
			_, userKey, err := decodeChange(value)
			return err == nil && sh.Contains(userKey)
		}},
		{lower: []byte{keyspaceLease}, upper: []byte{keyspaceLease + 1}, keep: func(key, _ []byte) bool {
			return len(key) >= 10 && sh.Contains(key[9:len(key)-1])
		}},
		{lower: ml, upper: mu},
	}
}

// WriteSnapshot streams the shard's state as of snap.
func (sh *Shard) WriteSnapshot(snap *pebble.Snapshot, w io.Writer) error {
	return writeSnapshot(snap, w, sh.selectors())
}

// RecoverSnapshot replaces the shard's state with the snapshot's and reloads
// its metadata.
func (sh *Shard) RecoverSnapshot(r io.Reader) error {
	if err := recoverSnapshot(sh.store.db, r, sh.selectors()); err != nil {
		return err
	}
	return sh.load()
}

// WriteMetaSnapshot streams the metadata of shardID (the meta group keeps
// all of its state there) as of snap.
func (s *Store) WriteMetaSnapshot(shardID uint64, snap *pebble.Snapshot, w io.Writer) error {
	ml, mu := metaBounds(shardID)
	return writeSnapshot(snap, w, []selector{{lower: ml, upper: mu}})
}

// RecoverMetaSnapshot replaces the metadata of shardID with the snapshot's.
func (s *Store) RecoverMetaSnapshot(shardID uint64, r io.Reader) error {
	ml, mu := metaBounds(shardID)
	return recoverSnapshot(s.db, r, []selector{{lower: ml, upper: mu}})
}

func writeSnapshot(snap *pebble.Snapshot, w io.Writer, sels []selector) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	var hdr []byte
	for _, sel := range sels {
		it, err := snap.NewIter(&pebble.IterOptions{LowerBound: sel.lower, UpperBound: sel.upper})
		if err != nil {
			return err
		}
		for valid := it.First(); valid; valid = it.Next() {
			value, err := it.ValueAndErr()
			if err != nil {
				it.Close()
				return err
			}
			if sel.keep != nil && !sel.keep(it.Key(), value) {
				continue
			}
			hdr = binary.AppendUvarint(hdr[:0], uint64(len(it.Key())))
			hdr = append(hdr, it.Key()...)
			hdr = binary.AppendUvarint(hdr, uint64(len(value)))
			if _, err := bw.Write(hdr); err != nil {
				it.Close()
				return err
			}
			if _, err := bw.Write(value); err != nil {
				it.Close()
				return err
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
	}
	if err := bw.WriteByte(0); err != nil {
		return err
	}
	return bw.Flush()
}

var errBadSnapshot = errors.New("mvcc: malformed snapshot")

// recoverSnapshot deletes what sels select and writes the snapshot's keys,
// committing in chunks; the metadata (applied index) is in the last chunk
// because it sorts last ('m').
func recoverSnapshot(db *pebble.DB, r io.Reader, sels []selector) error {
	b := db.NewBatch()
	for _, sel := range sels {
		if sel.keep == nil {
			if err := b.DeleteRange(sel.lower, sel.upper, nil); err != nil {
				return err
			}
			continue
		}
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: sel.lower, UpperBound: sel.upper})
		if err != nil {
			return err
		}
		for valid := it.First(); valid; valid = it.Next() {
			value, err := it.ValueAndErr()
			if err != nil {
				it.Close()
				return err
			}
			if sel.keep(it.Key(), value) {
				_ = b.Delete(it.Key(), nil)
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
	}
	br := bufio.NewReaderSize(r, 256<<10)
	for {
		klen, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("%w: %v", errBadSnapshot, err)
		}
		if klen == 0 {
			break
		}
		key := make([]byte, klen)
		if _, err := io.ReadFull(br, key); err != nil {
			return fmt.Errorf("%w: %v", errBadSnapshot, err)
		}
		vlen, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("%w: %v", errBadSnapshot, err)
		}
		value := make([]byte, vlen)
		if _, err := io.ReadFull(br, value); err != nil {
			return fmt.Errorf("%w: %v", errBadSnapshot, err)
		}
		if err := b.Set(key, value, nil); err != nil {
			return err
		}
		if b.Len() > 32<<20 {
			if err := b.Commit(pebble.NoSync); err != nil {
				return err
			}
			b.Close()
			b = db.NewBatch()
		}
	}
	defer b.Close()
	if err := b.Commit(pebble.NoSync); err != nil {
		return err
	}
	// Recovery replaces state dragonboat will not replay: make it durable.
	return db.Flush()
}
