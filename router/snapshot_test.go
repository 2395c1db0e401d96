package router_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/basaltdb/basalt/internal/testnode"
)

// A client that gives up on a snapshot stops the member's backup: the
// spooled file is removed while far smaller than the whole backup, instead
// of being written to the end first.
func TestSnapshotStopsWhenClientLeaves(t *testing.T) {
	n := testnode.Start(t)
	c := n.Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	value := strings.Repeat("v", 1<<20)
	for i := range 128 {
		if _, err := c.Put(ctx, fmt.Sprintf("big/%03d", i), value); err != nil {
			t.Fatal(err)
		}
	}
	rc, err := c.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	whole, err := io.Copy(io.Discard, rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}

	sctx, leave := context.WithCancel(ctx)
	defer leave()
	go func() {
		if rc, err := c.Snapshot(sctx); err == nil {
			_, _ = io.Copy(io.Discard, rc)
			rc.Close()
		}
	}()
	spooled := func() (int64, bool) {
		files, _ := filepath.Glob(filepath.Join(n.DataDir(), "snapshot-*.part"))
		if len(files) == 0 {
			return 0, false
		}
		fi, err := os.Stat(files[0])
		if err != nil {
			return 0, false
		}
		return fi.Size(), true
	}
	// Leave once the member has started to spool.
	for {
		if size, ok := spooled(); ok && size > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the second snapshot never started to spool")
		}
		time.Sleep(time.Millisecond)
	}
	leave()
	var largest int64
	for {
		size, ok := spooled()
		if !ok {
			break
		}
		largest = max(largest, size)
		if ctx.Err() != nil {
			t.Fatal("the spooled snapshot was never removed")
		}
		time.Sleep(time.Millisecond)
	}
	if largest > whole/2 {
		t.Fatalf("the member spooled %d of %d bytes after its client left", largest, whole)
	}
}
