package placement

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble"
	"golang.org/x/sys/unix"

	"github.com/basaltdb/basalt/shard"
)

// TestFdatasyncRunning: the raw sync reports success on a file that takes
// it, and the kernel's error on a descriptor that is no longer open, as
// unix.Fdatasync does.
func TestFdatasyncRunning(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("entry")); err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	if err := fdatasyncRunning(fd); err != nil {
		t.Fatalf("sync of an open file: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	err = fdatasyncRunning(fd)
	if want := unix.Fdatasync(fd); !errors.Is(err, unix.EBADF) || !errors.Is(want, unix.EBADF) {
		t.Fatalf("sync of a closed descriptor: %v (unix.Fdatasync: %v), want EBADF", err, want)
	}
}

// TestPreallocatedLogReplays: a watched Raft log store's write-ahead log is
// allocated at its full length when created (so that appends do not change
// its size), and a copy of the store taken while it runs, as a crash leaves
// it, opens with every synced write: Pebble reads the zeros after the last
// record as the log's end.
func TestPreallocatedLogReplays(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "raft")
	gate := shard.NewSyncGate()
	if err := watchLogSyncs(dir, gate); err != nil {
		t.Fatal(err)
	}
	defer unwatchLogSyncs(dir, gate)
	db, err := pebble.Open(dir, &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := range 100 {
		if err := db.Set(fmt.Appendf(nil, "key%03d", i), []byte("value"), pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}

	logs, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil || len(logs) != 1 {
		t.Fatalf("write-ahead logs: %v %v, want one", logs, err)
	}
	st, err := os.Stat(logs[0])
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != logPreallocate {
		t.Fatalf("the log is %d bytes long, want %d (allocated ahead)", st.Size(), logPreallocate)
	}

	crashed := filepath.Join(t.TempDir(), "crashed")
	if err := os.CopyFS(crashed, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	reopened, err := pebble.Open(crashed, &pebble.Options{})
	if err != nil {
		t.Fatalf("open after a crash: %v", err)
	}
	defer reopened.Close()
	for i := range 100 {
		v, closer, err := reopened.Get(fmt.Appendf(nil, "key%03d", i))
		if err != nil {
			t.Fatalf("key%03d after a crash: %v", i, err)
		}
		if string(v) != "value" {
			t.Fatalf("key%03d after a crash: %q", i, v)
		}
		closer.Close()
	}
}
