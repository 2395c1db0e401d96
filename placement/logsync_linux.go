package placement

import (
	"sync"

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
	// Allocated blocks make appends cheaper to sync, and a file already
	// that long cheaper still: an append that grows the file changes its
	// size, and each fdatasync then commits ext4's journal too. Pebble
	// allocates with FALLOC_FL_KEEP_SIZE; etcd's WAL, like this, sets the
	// size. Pebble reads the zeros past the last record as the log's end,
	// as it reads the old records of a recycled log.
	_ = unix.Fallocate(fd, 0, 0, logPreallocate)
	return &syncingLog{File: f, fd: fd, gate: gate}, nil
}

// syncingLog is a write-ahead log that reports its syncs, and skips those
// that only a commit index needs (logscan.go). It has no Fd method on
// purpose: Pebble then syncs it through Sync rather than on the file
// descriptor.
type syncingLog struct {
	pebblevfs.File
	fd   int
	gate *shard.SyncGate

	mu   sync.Mutex
	scan logScan
}

func (f *syncingLog) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	f.mu.Lock()
	f.scan.wrote(p[:n])
	f.mu.Unlock()
	return n, err
}

// Sync holds mu through the sync: bytes written meanwhile might miss it,
// and must not be taken as synced. (Pebble writes and syncs the log from
// one goroutine, so nothing waits for mu.)
func (f *syncingLog) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.scan.needsSync() {
		f.gate.SyncSkipped()
		return nil
	}
	f.gate.SyncStarted()
	defer f.gate.SyncEnded()
	if err := fdatasyncRunning(f.fd); err != nil {
		return err
	}
	f.scan.synced()
	return nil
}

// fdatasyncRunning is fdatasync(2) made without telling Go's scheduler
// that the goroutine is in a system call, so that its thread keeps its P.
//
// Through syscall.Syscall, every sync of the Raft log (about a thousand a
// second under load, 0.5 ms each) left its P in a system call long enough
// for the runtime's monitor thread to take it and hand it to another
// thread; each time, the monitor then polled every 20 µs for the next
// millisecond. Under a 100-client put load on two cores it used about 5%
// of the node's CPU and made a fifth of its context switches, and
// the thread back from the sync had to find a P again. Syncing this way,
// the monitor used about a quarter of that, a node's CPU per put fell by
// about 3% (two nodes side by side, five pairs of six), and 4 and 16
// clients got 4-12% more puts a second.
//
// The cost: while a sync runs, its P runs nothing else (busy nodes have
// spare Ps, see cmd/basalt), and a stop-the-world of the garbage collector
// waits for the sync to end. So a stalled disk stops the whole node at its
// next collection, rather than its writes and linearizable reads alone.
func fdatasyncRunning(fd int) error {
	for {
		_, _, errno := unix.RawSyscall(unix.SYS_FDATASYNC, uintptr(fd), 0, 0)
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		default:
			return errno
		}
	}
}
