package placement

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/record"
	"github.com/lni/dragonboat/v4/raftpb"
)

// scannedLog is a write-ahead log in memory whose syncs ask a logScan, as
// syncingLog's do. Writes can be fed to the scan in pieces of piece bytes.
type scannedLog struct {
	scan  logScan
	data  []byte
	piece int
	// syncs records, for each sync asked for, whether it was needed.
	syncs []bool
}

func (l *scannedLog) Write(p []byte) (int, error) {
	l.data = append(l.data, p...)
	for q := p; len(q) > 0; {
		n := len(q)
		if l.piece > 0 && n > l.piece {
			n = l.piece
		}
		l.scan.wrote(q[:n])
		q = q[n:]
	}
	return len(p), nil
}

func (l *scannedLog) Sync() error {
	need := l.scan.needsSync()
	l.syncs = append(l.syncs, need)
	if need {
		l.scan.synced()
	}
	return nil
}

// syncRecord writes batch as one synced record, as Pebble commits a synced
// batch, and returns whether its sync was needed.
func syncRecord(t *testing.T, w *record.LogWriter, l *scannedLog, b *pebble.Batch) bool {
	t.Helper()
	var wg sync.WaitGroup
	var err error
	wg.Add(1)
	n := len(l.syncs)
	if _, werr := w.SyncRecord(b.Repr(), &wg, &err); werr != nil {
		t.Fatal(werr)
	}
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(l.syncs) != n+1 {
		t.Fatalf("one synced record made %d syncs", len(l.syncs)-n)
	}
	return l.syncs[n]
}

// raftStateKey is dragonboat's key of a group's Raft state.
func raftStateKey(shardID, replicaID uint64) []byte {
	k := append([]byte{0x02, 0x02, 0x00, 0x00}, make([]byte, 16)...)
	binary.BigEndian.PutUint64(k[4:], shardID)
	binary.BigEndian.PutUint64(k[12:], replicaID)
	return k
}

func stateBatch(t *testing.T, shardID uint64, st raftpb.State) *pebble.Batch {
	t.Helper()
	b := new(pebble.Batch)
	_ = b.Set(raftStateKey(shardID, 1), mustMarshal(t, st), nil)
	return b
}

// entryBatch is a batch of the shape dragonboat saves an entry in: the
// entry, the group's newest index, and its state.
func entryBatch(t *testing.T, shardID uint64, st raftpb.State, size int) *pebble.Batch {
	t.Helper()
	b := stateBatch(t, shardID, st)
	key := append([]byte{0x01, 0x01, 0x00, 0x00}, make([]byte, 24)...)
	binary.BigEndian.PutUint64(key[4:], shardID)
	binary.BigEndian.PutUint64(key[20:], st.Commit+1)
	_ = b.Set(key, make([]byte, size), nil)
	_ = b.Set(append([]byte{0x03, 0x03, 0x00, 0x00}, key[4:20]...), binary.BigEndian.AppendUint64(nil, st.Commit+1), nil)
	return b
}

// TestLogScanSkipsCommitOnlyStates: a sync is skipped when only commit
// indexes were written since the last one, and made when an entry, a new
// term or vote, a group's first state, or anything else was; also with
// records that span blocks, and with writes seen in small pieces.
func TestLogScanSkipsCommitOnlyStates(t *testing.T) {
	for _, piece := range []int{0, 5, 4093} {
		l := &scannedLog{piece: piece}
		w := record.NewLogWriter(l, 7)
		st := raftpb.State{Term: 2, Vote: 1, Commit: 10}
		steps := []struct {
			what string
			b    *pebble.Batch
			need bool
		}{
			{"a group's first state", stateBatch(t, 2, st), true},
			{"its commit index alone", stateBatch(t, 2, raftpb.State{Term: 2, Vote: 1, Commit: 11}), false},
			{"an entry", entryBatch(t, 2, raftpb.State{Term: 2, Vote: 1, Commit: 11}, 100), true},
			{"a commit index again", stateBatch(t, 2, raftpb.State{Term: 2, Vote: 1, Commit: 12}), false},
			{"another group's first state", stateBatch(t, 1, st), true},
			{"a new term", stateBatch(t, 2, raftpb.State{Term: 3, Vote: 0, Commit: 12}), true},
			{"a vote", stateBatch(t, 2, raftpb.State{Term: 3, Vote: 2, Commit: 12}), true},
			{"a commit index after the vote", stateBatch(t, 2, raftpb.State{Term: 3, Vote: 2, Commit: 13}), false},
			{"an entry over three blocks", entryBatch(t, 2, raftpb.State{Term: 3, Vote: 2, Commit: 13}, 80<<10), true},
			{"a commit index past the blocks", stateBatch(t, 2, raftpb.State{Term: 3, Vote: 2, Commit: 14}), false},
		}
		for _, s := range steps {
			if got := syncRecord(t, w, l, s.b); got != s.need {
				t.Fatalf("pieces of %d bytes: %s: sync needed %v, want %v", piece, s.what, got, s.need)
			}
		}
		// A batch that deletes (as a log compaction does) is synced.
		del := new(pebble.Batch)
		_ = del.DeleteRange([]byte{0x01}, []byte{0x02}, nil)
		_ = del.Set(raftStateKey(2, 1), mustMarshal(t, raftpb.State{Term: 3, Vote: 2, Commit: 15}), nil)
		if !syncRecord(t, w, l, del) {
			t.Fatalf("pieces of %d bytes: a range deletion with a commit index: sync skipped", piece)
		}
		// Many commit-only records between two syncs: skipped together.
		for c := uint64(16); c < 40; c++ {
			if _, err := w.WriteRecord(stateBatch(t, 2, raftpb.State{Term: 3, Vote: 2, Commit: c}).Repr()); err != nil {
				t.Fatal(err)
			}
		}
		if syncRecord(t, w, l, stateBatch(t, 2, raftpb.State{Term: 3, Vote: 2, Commit: 40})) {
			t.Fatalf("pieces of %d bytes: 25 commit indexes: sync made", piece)
		}
		if l.scan.broken {
			t.Fatalf("pieces of %d bytes: the scan lost the log's framing", piece)
		}
		// Closing, Pebble ends the log with a header of the next log's
		// number, which is not a record: the sync after it is made.
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if !l.syncs[len(l.syncs)-1] {
			t.Fatalf("pieces of %d bytes: the closing sync was skipped", piece)
		}
		// What it followed is the log Pebble reads back.
		r := record.NewReader(bytes.NewReader(l.data), 7)
		n := 0
		for {
			if _, err := r.Next(); err != nil {
				break
			}
			n++
		}
		if want := len(steps) + 1 + 24 + 1; n < want {
			t.Fatalf("pieces of %d bytes: %d records read back, want at least %d", piece, n, want)
		}
	}
}

// TestLogScanSyncsWhatItCannotRead: a chunk whose checksum does not match,
// and a record not yet whole, are synced, and after a broken chunk every
// sync is made.
func TestLogScanSyncsWhatItCannotRead(t *testing.T) {
	l := &scannedLog{}
	w := record.NewLogWriter(l, 7)
	st := raftpb.State{Term: 2, Vote: 1, Commit: 10}
	syncRecord(t, w, l, stateBatch(t, 2, st))

	var s logScan
	s.wrote(l.data)
	s.synced()
	// The same commit-only record, with a byte of its payload changed.
	next := &scannedLog{}
	nw := record.NewLogWriter(next, 7)
	st.Commit = 11
	syncRecord(t, nw, next, stateBatch(t, 2, st))
	part := append([]byte(nil), next.data...)
	// Offsets in s continue after l's record; write a chunk whose checksum
	// cannot match wherever it sits.
	part[walHeaderSize+2] ^= 0xff
	s.wrote(part)
	if !s.needsSync() || !s.broken {
		t.Fatalf("a corrupt chunk: needs sync %v, broken %v", s.needsSync(), s.broken)
	}
	s.synced()
	if !s.needsSync() {
		t.Fatal("after a corrupt chunk a sync is skipped")
	}

	// Half a chunk: not whole yet, so synced.
	var h logScan
	h.wrote(l.data[:walHeaderSize+3])
	if !h.needsSync() {
		t.Fatal("half a chunk: sync skipped")
	}
}

func mustMarshal(t *testing.T, st raftpb.State) []byte {
	t.Helper()
	data, err := st.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}
