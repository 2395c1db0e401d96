package mvcc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap"
)

// Options configures a Store.
type Options struct {
	// FS is the file system; nil means the disk. Unit tests use vfs.NewMem().
	FS vfs.FS
	// CacheBytes is the size of Pebble's block cache; 0 means 64 MiB.
	CacheBytes int64
	Logger     *zap.Logger
}

// Store is the node's Pebble instance. It holds the data of every shard
// replica on the node (their spans are disjoint) and their metadata.
type Store struct {
	db *pebble.DB
	lg *zap.Logger
}

// Open opens or creates the store in dir.
func Open(dir string, opts Options) (*Store, error) {
	lg := opts.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	cacheBytes := opts.CacheBytes
	if cacheBytes == 0 {
		cacheBytes = 64 << 20
	}
	cache := pebble.NewCache(cacheBytes)
	defer cache.Unref()
	// Memtables are 64 MiB rather than 32: every level-0 table of random
	// keys overlaps the whole bottom level, which holds every version's
	// key, so each compaction out of level 0 rewrites a level that grows
	// with the history. Flushing half as often keeps a long put load's CPU
	// per put flat (docs/ARCHITECTURE.md, storage layout).
	po := &pebble.Options{
		FS:                          opts.FS,
		Comparer:                    Comparer,
		Cache:                       cache,
		MemTableSize:                64 << 20,
		MemTableStopWritesThreshold: 4,
		L0CompactionThreshold:       4,
		L0StopWritesThreshold:       24,
		LBaseMaxBytes:               128 << 20,
		CompactionConcurrencyRange:  func() (int, int) { return 1, 2 },
		FormatMajorVersion:          pebble.FormatNewest,
		// Applied batches go to Pebble's write-ahead log without a sync:
		// the Raft logs are durable, a crash loses a suffix of applied
		// entries together with their applied index (both are in the same
		// batch), and dragonboat applies them again. Sync, which dragonboat
		// calls before it compacts a Raft log, syncs the write-ahead log.
		// (Without one, Sync had to flush the memtables, and dragonboat
		// holds the state machine's lock meanwhile: every snapshot stalled
		// every write for the length of a 32 MiB flush.)
		Logger: pebbleLogger{lg.Sugar()},
	}
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	// Values go to blob files: compactions then rewrite keys and small
	// references, not every version's value again at every level. Basalt
	// keeps every version until etcd's compaction, so this is where the
	// write amplification would otherwise go. Random keys make every
	// table overlap every blob file; with a reference depth of 10, most
	// compactions read every value back and wrote it to a new blob file
	// (8% of a node's CPU under a put load), at 100 few do.
	po.Experimental.ValueSeparationPolicy = func() pebble.ValueSeparationPolicy {
		return pebble.ValueSeparationPolicy{
			Enabled:               true,
			MinimumSize:           64,
			MaxBlobReferenceDepth: 100,
			RewriteMinimumAge:     5 * time.Minute,
			TargetGarbageRatio:    0.2,
		}
	}
	po.EnsureDefaults()
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("mvcc: open %s: %w", dir, err)
	}
	return &Store{db: db, lg: lg}, nil
}

// DB exposes the Pebble instance to the state machines that own shard
// snapshots.
func (s *Store) DB() *pebble.DB { return s.db }

// Close closes Pebble.
func (s *Store) Close() error { return s.db.Close() }

// Sync makes every write so far durable: it syncs the write-ahead log
// (an empty record synced, as every record before it is). Dragonboat calls
// it before it compacts a Raft log.
func (s *Store) Sync() error { return s.db.LogData(nil, pebble.Sync) }

// Defragment compacts the whole store, as etcd's defragmentation rewrites
// its database: versions and change log entries that etcd's compaction
// deleted, and deleted keys, stop taking space.
func (s *Store) Defragment(ctx context.Context) error {
	return s.db.Compact(ctx, []byte{0}, []byte{0xff, 0xff}, true)
}

// DiskSize returns the bytes the store takes: Pebble's files (the
// write-ahead log among them), and the memtables not yet flushed to its
// tables.
func (s *Store) DiskSize() int64 {
	m := s.db.Metrics()
	return int64(m.DiskSpaceUsage() + m.MemTable.Size)
}

// GetMeta reads one metadata field of a shard. ok is false when it is absent.
func (s *Store) GetMeta(shardID uint64, name string) (value []byte, ok bool, err error) {
	return getCopy(s.db, appendMetaKey(nil, shardID, name))
}

// getCopy reads key's value from r into a new slice; ok is false when
// there is none.
func getCopy(r pebble.Reader, key []byte) (value []byte, ok bool, err error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer closer.Close()
	return append([]byte(nil), v...), true, nil
}

// ScanMeta calls fn with every metadata field of shardID whose name starts
// with prefix, in name order.
func (s *Store) ScanMeta(shardID uint64, prefix string, fn func(name string, value []byte) error) error {
	lower := appendMetaKey(nil, shardID, prefix)
	lower = lower[:len(lower)-1] // no sentinel: every name with the prefix
	_, upper := metaBounds(shardID)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	defer it.Close()
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		name := string(k[9 : len(k)-1])
		if len(name) < len(prefix) || name[:len(prefix)] != prefix {
			break
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if err := fn(name, v); err != nil {
			return err
		}
	}
	return it.Error()
}

// MetaBatch writes metadata fields of shards atomically.
type MetaBatch struct {
	b *pebble.Batch
}

// NewMetaBatch starts a metadata batch.
func (s *Store) NewMetaBatch() *MetaBatch { return &MetaBatch{b: s.db.NewBatch()} }

// Set sets one metadata field.
func (m *MetaBatch) Set(shardID uint64, name string, value []byte) {
	_ = m.b.Set(appendMetaKey(nil, shardID, name), value, nil)
}

// Delete deletes one metadata field.
func (m *MetaBatch) Delete(shardID uint64, name string) {
	_ = m.b.Delete(appendMetaKey(nil, shardID, name), nil)
}

// Commit commits the batch. Like every write to the store it becomes durable
// at the next Sync.
func (m *MetaBatch) Commit() error {
	defer m.b.Close()
	return m.b.Commit(pebble.NoSync)
}

// Metadata field names of a data shard.
const (
	metaApplied = "applied" // Raft index of the last applied entry
	metaRev     = "rev"     // revision of the last applied write
	metaCompact = "compact" // compacted revision
	metaSpan    = "span"    // the shard's key span
	metaBorn    = "born"    // revision of the split that created the shard
	metaLock    = "lock"    // the lock of a transaction across shards
	metaTxn     = "txn/"    // + id: commit record of a transaction across shards
)

// Shard is one data shard's view of the store: its span, its current and
// compacted revisions, and its applied Raft index. Reads run concurrently
// with one writer (the shard's apply loop).
type Shard struct {
	store *Store
	id    uint64
	// span is set by apply (bootstrap, splits) while readers use it.
	span atomic.Pointer[keySpan]

	rev     atomic.Int64 // revision of the newest applied write; 1 when empty
	compact atomic.Int64 // compacted revision; -1 before the first compaction
	applied atomic.Uint64
	// lock is the encoded lock the shard holds (nil: none), set by apply.
	lock atomic.Pointer[[]byte]
	// born is the revision of the split that created the shard (0: none).
	born int64

	latest latestCache // used by the apply goroutine only
	// spareWritten is a committed Writer's emptied list of written keys,
	// for the next Writer (apply goroutine only).
	spareWritten [][]byte
}

// OpenShard loads a shard's metadata; a shard never written to starts empty
// at revision 1 with the given span.
func (s *Store) OpenShard(id uint64, start, end []byte) (*Shard, error) {
	sh := &Shard{store: s, id: id}
	sh.span.Store(&keySpan{start: start, end: end})
	sh.rev.Store(1)
	sh.compact.Store(-1)
	if err := sh.load(); err != nil {
		return nil, err
	}
	return sh, nil
}

func (sh *Shard) load() error {
	if v, ok, err := sh.store.GetMeta(sh.id, metaApplied); err != nil {
		return err
	} else if ok {
		sh.applied.Store(binary.BigEndian.Uint64(v))
	}
	if v, ok, err := sh.store.GetMeta(sh.id, metaRev); err != nil {
		return err
	} else if ok {
		sh.rev.Store(int64(binary.BigEndian.Uint64(v)))
	}
	if v, ok, err := sh.store.GetMeta(sh.id, metaCompact); err != nil {
		return err
	} else if ok {
		sh.compact.Store(int64(binary.BigEndian.Uint64(v)))
	}
	if v, ok, err := sh.store.GetMeta(sh.id, metaSpan); err != nil {
		return err
	} else if ok {
		start, end, err := decodeSpan(v)
		if err != nil {
			return err
		}
		sh.span.Store(&keySpan{start: start, end: end})
	}
	if v, ok, err := sh.store.GetMeta(sh.id, metaBorn); err != nil {
		return err
	} else if ok {
		sh.born = int64(binary.BigEndian.Uint64(v))
	}
	lock, _, err := sh.store.GetMeta(sh.id, metaLock)
	if err != nil {
		return err
	}
	sh.lock.Store(&lock)
	start, end := sh.Span()
	return sh.latest.load(sh.store.db, start, end)
}

// ID returns the shard id.
func (sh *Shard) ID() uint64 { return sh.id }

// Rev returns the revision of the newest applied write (1 when empty).
func (sh *Shard) Rev() int64 { return sh.rev.Load() }

// BornRev returns the revision of the split that created the shard, 0 for
// a shard no split created: every change of its span above it is its own.
func (sh *Shard) BornRev() int64 { return sh.born }

// CompactRev returns the compacted revision, -1 before any compaction.
func (sh *Shard) CompactRev() int64 { return sh.compact.Load() }

// AppliedIndex returns the Raft index of the last applied entry.
func (sh *Shard) AppliedIndex() uint64 { return sh.applied.Load() }

// keySpan is a shard's key span [start, end); an empty end is no upper
// bound.
type keySpan struct{ start, end []byte }

// Span returns the shard's key span [start, end).
func (sh *Shard) Span() (start, end []byte) {
	s := sh.span.Load()
	return s.start, s.end
}

// Contains reports whether key is in the shard's span.
func (sh *Shard) Contains(key []byte) bool { return sh.span.Load().contains(key) }

func (s *keySpan) contains(key []byte) bool {
	return string(key) >= string(s.start) && (len(s.end) == 0 || string(key) < string(s.end))
}

// View returns a view of the shard at its current revision: its newest
// write's, or its compacted revision when that is higher (a compaction at
// a revision other shards wrote; the shard reads the same at both).
func (sh *Shard) View() *ReadView { return sh.ViewAt(max(sh.rev.Load(), sh.compact.Load())) }

// ViewAt returns a view of the shard whose current revision is rev, for
// linearizable reads at a revision chosen by the TSO. The caller ensures
// every write of the shard at or below rev is applied.
func (sh *Shard) ViewAt(rev int64) *ReadView {
	return &ReadView{r: sh.store.db, shards: []*Shard{sh}, span: *sh.span.Load(), rev: rev}
}

func encodeSpan(start, end []byte) []byte {
	b := binary.AppendUvarint(nil, uint64(len(start)))
	b = append(b, start...)
	return append(b, end...)
}

func decodeSpan(b []byte) (start, end []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return nil, nil, errCorruptValue
	}
	b = b[k:]
	return append([]byte(nil), b[:n]...), append([]byte(nil), b[n:]...), nil
}

type pebbleLogger struct{ s *zap.SugaredLogger }

func (l pebbleLogger) Infof(format string, args ...any)  { l.s.Debugf(format, args...) }
func (l pebbleLogger) Errorf(format string, args ...any) { l.s.Errorf(format, args...) }
func (l pebbleLogger) Fatalf(format string, args ...any) { l.s.Fatalf(format, args...) }
