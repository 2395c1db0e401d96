package mvcc

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cockroachdb/pebble/v2"
)

// A backup is what Maintenance.Snapshot streams and `basaltctl snapshot
// restore` loads: the key space of every shard as of one revision.
//
//	magic "basalt-backup-1\n"
//	revision, compacted revision (varints)
//	records, as in a replica's snapshot: key length, Pebble key, value
//	  length, value, ended by a zero key length; the versions (keyspace
//	  d) and change log (keyspace c) at or below the revision, as the
//	  store holds them
//	leases: count, then id and TTL of each (varints)
//	zero bytes up to a multiple of 512
//	SHA-256 of everything before it
//
// The padding and the trailing checksum are etcd's: etcdctl snapshot save
// accepts a stream whose size is a multiple of 512 plus 32.

const backupMagic = "basalt-backup-1\n"

// backupAlign is the block size the body is padded to.
const backupAlign = 512

// ErrBadBackup is returned for a backup that is malformed or whose checksum
// does not match.
var ErrBadBackup = errors.New("mvcc: not a Basalt snapshot")

// BackupLease is a lease a backup carries.
type BackupLease struct {
	ID  int64
	TTL int64
}

// BackupInfo is what a restored backup held besides its keys.
type BackupInfo struct {
	Rev, Compacted int64
	Leases         []BackupLease
}

// WriteBackup writes the view's versions and change log at or below its
// revision, with leases, as a backup. (Keys whose lease leases lacks, one
// revoked since the revision, lose it in the restored cluster: its lessor
// deletes keys of leases that do not exist.) It fails with ErrCompacted,
// before writing anything, when a compaction past the view's revision
// removed versions it needs.
func (v *ReadView) WriteBackup(w io.Writer, leases []BackupLease) error {
	snap := v.shards[0].store.db.NewSnapshot()
	defer snap.Close()
	// Compactions publish their revision before they delete: read after
	// the Pebble snapshot, it covers whatever the snapshot misses.
	compacted := v.compactRev()
	if compacted > v.rev {
		return ErrCompacted
	}

	h := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(w, h)}
	var buf []byte
	buf = append(buf, backupMagic...)
	buf = binary.AppendVarint(buf, v.rev)
	buf = binary.AppendVarint(buf, compacted)
	if _, err := cw.Write(buf); err != nil {
		return err
	}
	// The records are a replica snapshot's (writeSnapshot): the versions,
	// then the change log, up to the revision.
	lower, upper := dataSpanBounds(v.span.start, v.span.end)
	err := writeSnapshot(snap, cw, []selector{
		{lower: lower, upper: upper, keep: func(key, _ []byte) bool {
			_, r, ok := decodeDataKey(key)
			return ok && r.Main <= v.rev
		}},
		{lower: []byte{keyspaceChange}, upper: appendChangeKey(nil, Revision{Main: v.rev + 1}), keep: func(_, value []byte) bool {
			_, userKey, err := decodeChange(value)
			return err == nil && v.span.contains(userKey)
		}},
	})
	if err != nil {
		return err
	}
	buf = binary.AppendUvarint(buf[:0], uint64(len(leases)))
	for _, l := range leases {
		buf = binary.AppendVarint(buf, l.ID)
		buf = binary.AppendVarint(buf, l.TTL)
	}
	if _, err := cw.Write(buf); err != nil {
		return err
	}
	if pad := (backupAlign - cw.n%backupAlign) % backupAlign; pad > 0 {
		if _, err := cw.Write(make([]byte, pad)); err != nil {
			return err
		}
	}
	_, err = w.Write(h.Sum(nil))
	return err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// VerifyBackup checks that r, size bytes long, ends with the SHA-256 of
// what precedes it.
func VerifyBackup(r io.Reader, size int64) error {
	if size < sha256.Size+int64(len(backupMagic)) || (size-sha256.Size)%backupAlign != 0 {
		return fmt.Errorf("%w: size %d is not a multiple of %d plus a %d-byte checksum", ErrBadBackup, size, backupAlign, sha256.Size)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, r, size-sha256.Size); err != nil {
		return err
	}
	want := make([]byte, sha256.Size)
	if _, err := io.ReadFull(r, want); err != nil {
		return err
	}
	if got := h.Sum(nil); !bytes.Equal(got, want) {
		return fmt.Errorf("%w: expected sha256 %x, got %x", ErrBadBackup, want, got)
	}
	return nil
}

// RestoreBackup loads a backup (checked with VerifyBackup first) into an
// empty store as shard shardID, which spans every key: the versions and
// change log, the lease index of every key's newest version, and the
// shard's revision and compacted revision. It syncs the store before it
// returns.
func RestoreBackup(s *Store, shardID uint64, r io.Reader) (*BackupInfo, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	magic := make([]byte, len(backupMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != backupMagic {
		return nil, fmt.Errorf("%w: no %q header", ErrBadBackup, backupMagic[:len(backupMagic)-1])
	}
	info := &BackupInfo{}
	var err error
	if info.Rev, err = binary.ReadVarint(br); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadBackup, err)
	}
	if info.Compacted, err = binary.ReadVarint(br); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadBackup, err)
	}

	b := s.db.NewBatch()
	defer func() { b.Close() }()
	commit := func() error {
		if err := b.Commit(pebble.NoSync); err != nil {
			return err
		}
		b.Close()
		b = s.db.NewBatch()
		return nil
	}
	var lastKey []byte
	for {
		key, err := readChunk(br)
		if err != nil {
			return nil, err
		}
		if len(key) == 0 {
			break
		}
		value, err := readChunk(br)
		if err != nil {
			return nil, err
		}
		switch key[0] {
		case keyspaceData:
			userKey, rev, ok := decodeDataKey(key)
			if !ok || rev.Main > info.Rev {
				return nil, fmt.Errorf("%w: bad version key %x", ErrBadBackup, key)
			}
			ver, err := decodeValue(value)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrBadBackup, err)
			}
			// Versions come newest first: the first of a key is the one
			// whose lease the index records.
			if !bytes.Equal(userKey, lastKey) {
				lastKey = append(lastKey[:0], userKey...)
				if !ver.tombstone && ver.lease != 0 {
					_ = b.Set(appendLeaseKey(nil, ver.lease, userKey), nil, nil)
				}
			}
		case keyspaceChange:
			rev, ok := decodeChangeKey(key)
			if !ok || rev.Main > info.Rev {
				return nil, fmt.Errorf("%w: bad change log key %x", ErrBadBackup, key)
			}
			if _, _, err := decodeChange(value); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrBadBackup, err)
			}
		default:
			return nil, fmt.Errorf("%w: unexpected key %x", ErrBadBackup, key)
		}
		_ = b.Set(key, value, nil)
		if b.Len() > 4<<20 {
			if err := commit(); err != nil {
				return nil, err
			}
		}
	}
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadBackup, err)
	}
	for range n {
		var l BackupLease
		if l.ID, err = binary.ReadVarint(br); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadBackup, err)
		}
		if l.TTL, err = binary.ReadVarint(br); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadBackup, err)
		}
		info.Leases = append(info.Leases, l)
	}

	_ = b.Set(appendMetaKey(nil, shardID, metaSpan), encodeSpan(nil, nil), nil)
	_ = b.Set(appendMetaKey(nil, shardID, metaRev), binary.BigEndian.AppendUint64(nil, uint64(info.Rev)), nil)
	if info.Compacted >= 0 {
		_ = b.Set(appendMetaKey(nil, shardID, metaCompact), binary.BigEndian.AppendUint64(nil, uint64(info.Compacted)), nil)
	}
	if err := commit(); err != nil {
		return nil, err
	}
	return info, s.Sync()
}

// readChunk reads a uvarint length and that many bytes.
func readChunk(br *bufio.Reader) ([]byte, error) {
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadBackup, err)
	}
	if n > 1<<30 {
		return nil, fmt.Errorf("%w: a record of %d bytes", ErrBadBackup, n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadBackup, err)
	}
	return p, nil
}
