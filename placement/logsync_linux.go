package placement

import (
	pebblevfs "github.com/cockroachdb/pebble/vfs"
	"golang.org/x/sys/unix"

	"github.com/basaltdb/basalt/shard"
)

func init() {
	pebblevfs.Default = logSyncFS{FS: pebblevfs.Default}
}

// logSyncFS is Pebble's default file system, with write-ahead logs that
// report their syncs.
type logSyncFS struct{ pebblevfs.FS }

func (fs logSyncFS) Create(name string) (pebblevfs.File, error) {
	f, err := fs.FS.Create(name)
	return watchLog(name, f, err)
}

func (fs logSyncFS) ReuseForWrite(oldname, newname string) (pebblevfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname)
	return watchLog(newname, f, err)
}

// logPreallocate is how much of a new write-ahead log is allocated ahead:
// Pebble allocates 110% of a memtable, which a syncing log file (without
// a file descriptor) no longer does for it.
const logPreallocate = logDBMemtableBytes * 11 / 10

func watchLog(name string, f pebblevfs.File, err error) (pebblevfs.File, error) {
	if err != nil || !isLogFile(name) {
		return f, err
	}
	fder, ok := f.(interface{ Fd() uintptr })
	if !ok {
		return f, nil
	}
	gate := logGateOf(name)
	if gate == nil {
		return f, nil
	}
	fd := int(fder.Fd())
	// As Pebble would: allocated blocks make appends cheaper to sync.
	_ = unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 0, logPreallocate)
	return &syncingLog{File: f, fd: fd, gate: gate}, nil
}

// syncingLog is a write-ahead log that reports its syncs. It has no Fd
// method on purpose: Pebble then syncs it through Sync rather than on the
// file descriptor.
type syncingLog struct {
	pebblevfs.File
	fd   int
	gate *shard.SyncGate
}

func (f *syncingLog) Sync() error {
	f.gate.SyncStarted()
	defer f.gate.SyncEnded()
	return unix.Fdatasync(f.fd)
}
