package placement_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/basaltdb/basalt/internal/node"
	"github.com/basaltdb/basalt/internal/testnode"
)

// TestWritesNotRefusedAtLogMemtableSwitch writes about 100 MiB through one
// node's Raft log, enough for its log store to switch memtables (32 MiB)
// three times under a steady load. Every put succeeds, and the node never
// had a proposal refused as busy (which it logs as propose-failed before
// retrying it; the client only sees the delay).
func TestWritesNotRefusedAtLogMemtableSwitch(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	n := testnode.Start(t, func(c *node.Config) { c.Logger = zap.New(core) })
	cli := n.Client(t)
	value := strings.Repeat("v", 64<<10)
	const writers, perWriter = 16, 100
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				if _, err := cli.Put(ctx, fmt.Sprintf("k%02d/%03d", w, i), value); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("put: %v", err)
	}
	if refused := logs.FilterMessage("propose-failed"); refused.Len() > 0 {
		t.Fatalf("%d proposals refused, the first: %v", refused.Len(), refused.All()[0].ContextMap())
	}
}
