package placement

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
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
