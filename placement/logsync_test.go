package placement_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/basaltdb/basalt/internal/testnode"
)

// TestRaftLogSyncsReachSequencers: the syncs of a node's Raft log store
// reach its sequencers' gate, after a restart too (the restarted node
// watches its directory again).
func TestRaftLogSyncsReachSequencers(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the Raft log store's syncs are watched on Linux only")
	}
	n := testnode.Start(t)
	for round := range 2 {
		if round == 1 {
			n.Restart()
		}
		cli := n.Client(t)
		before, _ := n.LogSyncs()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for i := range 10 {
			if _, err := cli.Put(ctx, fmt.Sprintf("k%d", i), "v"); err != nil {
				cancel()
				t.Fatal(err)
			}
		}
		cancel()
		if after, _ := n.LogSyncs(); after < before+10 {
			t.Fatalf("round %d: 10 acknowledged puts, and the gate saw %d syncs end", round, after-before)
		}
	}
}
