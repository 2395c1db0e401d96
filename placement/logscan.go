package placement

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"

	"github.com/cockroachdb/pebble"
	"github.com/lni/dragonboat/v4/raftpb"
)

// Dragonboat's Pebble log store saves a group's Raft state whenever it
// changes, and every save is a synced write. Most saves on three members
// change only the commit index: the leader's when a quorum has an entry,
// a follower's when it learns that. With one client, each member synced
// twice per put (the entry, then the commit), and the next put's entry
// waited for the second sync. etcd's raft does not sync a state whose term
// and vote are unchanged and that comes with no entry (MustSync), and
// dragonboat's tan log store does the same: a lost commit index is
// learned again from the leader, and entries at or below what the state
// machine has applied are skipped when a restarted member replays them.
// Dragonboat's Pebble log store has no option for it, so the write-ahead
// log's file tells: a logScan follows the records written to it, and a
// sync is skipped when every record since the last one is such a state.
//
// A record is a Pebble batch in Pebble's log format (the version
// dragonboat pins): blocks of 32 KiB holding chunks, each with a checksum,
// length, type and log number; a record too long for its block continues
// in the next. The batch's operations are key and value sets; the state's
// key is dragonboat's (two bytes 0x02, two zero bytes, the shard id and the
// replica id, big-endian) and its value a raftpb.State. Anything else, a
// chunk whose checksum does not match, or a record cut off is synced.

const (
	walBlockSize  = 32 << 10
	walHeaderSize = 11 // checksum (4), length (2), type (1), log number (4)

	walChunkFull   = 5 // the recyclable chunk types Pebble's LogWriter writes
	walChunkFirst  = 6
	walChunkMiddle = 7
	walChunkLast   = 8

	raftStateKeyLen = 20
)

var (
	raftStateKeyPrefix = []byte{0x02, 0x02, 0x00, 0x00}
	castagnoli         = crc32.MakeTable(crc32.Castagnoli)
)

// logScan follows the bytes written to one write-ahead log, in order from
// its start.
type logScan struct {
	off     int64  // offset of the first byte of pend in the file
	pend    []byte // written bytes not parsed yet: part of a chunk
	rec     []byte // the record whose chunks are being joined
	inRec   bool
	broken  bool // the stream did not parse: sync everything
	mustRun bool // a record since the last sync needs one
	// terms holds the term and vote of each group's last written state.
	terms map[string]termVote
}

type termVote struct{ term, vote uint64 }

// wrote follows p, the next bytes written to the file.
func (s *logScan) wrote(p []byte) {
	if s.broken {
		return
	}
	s.pend = append(s.pend, p...)
	n := 0
	for !s.broken {
		m := s.chunk(s.pend[n:])
		if m == 0 {
			break
		}
		n += m
	}
	s.off += int64(n)
	s.pend = append(s.pend[:0], s.pend[n:]...)
}

// chunk parses the chunk (or block padding) at the start of b, which sits
// at s.off plus what was parsed before it, and returns its length, or 0
// when b does not hold all of it yet.
func (s *logScan) chunk(b []byte) int {
	pos := (s.off + int64(len(s.pend)-len(b))) % walBlockSize
	if room := walBlockSize - pos; room < walHeaderSize {
		// The block's tail is zeros: no chunk header fits.
		if int64(len(b)) < room {
			return 0
		}
		return int(room)
	}
	if len(b) < walHeaderSize {
		return 0
	}
	length := int(binary.LittleEndian.Uint16(b[4:6]))
	typ := b[6]
	if pos+walHeaderSize+int64(length) > walBlockSize {
		s.broken = true
		return 0
	}
	if len(b) < walHeaderSize+length {
		return 0
	}
	c := crc32.Update(0, castagnoli, b[6:walHeaderSize+length])
	if binary.LittleEndian.Uint32(b[0:4]) != (c>>15|c<<17)+0xa282ead8 {
		s.broken = true
		return 0
	}
	payload := b[walHeaderSize : walHeaderSize+length]
	switch {
	case typ == walChunkFull && !s.inRec:
		s.record(payload)
	case typ == walChunkFirst && !s.inRec:
		s.rec, s.inRec = append(s.rec[:0], payload...), true
	case typ == walChunkMiddle && s.inRec:
		s.rec = append(s.rec, payload...)
	case typ == walChunkLast && s.inRec:
		s.rec, s.inRec = append(s.rec, payload...), false
		s.record(s.rec)
	default:
		s.broken = true
		return 0
	}
	return walHeaderSize + length
}

// record notes whether the batch rec must be synced.
func (s *logScan) record(rec []byte) {
	r, count := pebble.ReadBatch(rec)
	if count == 0 {
		s.mustRun = true
		return
	}
	for range count {
		kind, key, value, ok := r.Next()
		if !ok {
			s.mustRun = true
			return
		}
		if kind != pebble.InternalKeyKindSet || len(key) != raftStateKeyLen || !bytes.HasPrefix(key, raftStateKeyPrefix) {
			s.mustRun = true
			continue
		}
		var st raftpb.State
		if err := st.Unmarshal(value); err != nil {
			s.mustRun = true
			continue
		}
		tv := termVote{st.Term, st.Vote}
		if prev, ok := s.terms[string(key)]; !ok || prev != tv {
			s.mustRun = true
			if s.terms == nil {
				s.terms = make(map[string]termVote)
			}
			s.terms[string(key)] = tv
		}
	}
	if len(r) != 0 {
		s.mustRun = true
	}
}

// needsSync tells whether the bytes written since the last sync need one.
func (s *logScan) needsSync() bool {
	return s.broken || s.mustRun || s.inRec || len(s.pend) > 0
}

// synced notes a sync of everything written so far.
func (s *logScan) synced() { s.mustRun = false }
