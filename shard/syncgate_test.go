package shard

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestSyncGateTellsWhenSyncsEnd(t *testing.T) {
	g := NewSyncGate()
	if g.inSync() != nil {
		t.Fatal("a new gate reports a sync in progress")
	}
	g.SyncStarted()
	end := g.inSync()
	if end == nil {
		t.Fatal("no sync reported in progress after SyncStarted")
	}
	g.SyncStarted() // a second log's sync overlaps the first
	g.SyncEnded()
	select {
	case <-end:
		t.Fatal("end closed while a sync is still in progress")
	default:
	}
	g.SyncEnded()
	select {
	case <-end:
	default:
		t.Fatal("end not closed after every sync ended")
	}
	g.SyncSkipped()
	if ended, skipped := g.Syncs(); g.inSync() != nil || ended != 2 || skipped != 1 {
		t.Fatalf("after two syncs and a skipped one: in sync %v, %d syncs and %d skipped counted", g.inSync() != nil, ended, skipped)
	}
	var none *SyncGate
	if none.inSync() != nil {
		t.Fatal("a nil gate reports a sync")
	}
}

// blockingObserver holds the first apply of writes it sees until released
// is closed.
type blockingObserver struct {
	once     sync.Once
	entered  chan struct{}
	released chan struct{}
}

func (o *blockingObserver) Observe(it FeedItem) {
	if len(it.Events) == 0 {
		return // the resolver's, not an apply's
	}
	o.once.Do(func() {
		close(o.entered)
		<-o.released
	})
}

// TestWritesDuringLogSyncShareAnEntry: while the log store syncs, a write
// that finds nothing in flight is proposed at once; writes that arrive
// while an entry is in flight wait for the sync to end and are proposed
// together, as one entry with one run of revisions.
func TestWritesDuringLogSyncShareAnEntry(t *testing.T) {
	gate := NewSyncGate()
	r := startReplica(t, SequencerConfig{Gate: gate})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	gate.SyncStarted()
	if _, err := r.Write(ctx, putTxn("idle", "v")); err != nil {
		t.Fatalf("a write with nothing in flight, during a sync: %v", err)
	}
	r.alloc.mu.Lock()
	callsBefore := r.alloc.calls
	r.alloc.mu.Unlock()
	// Its batch leaves the sequencer's books after its answer.
	for r.seq.hasInflight() {
		waitOrFail(ctx, t, "the idle write's batch is still in flight")
	}

	// The next entry stays in flight: its apply is held.
	obs := &blockingObserver{entered: make(chan struct{}), released: make(chan struct{})}
	var release, end sync.Once
	defer release.Do(func() { close(obs.released) })
	defer end.Do(gate.SyncEnded)
	r.Observe(obs)
	first := make(chan error, 1)
	go func() {
		_, err := r.Write(ctx, putTxn("first", "v"))
		first <- err
	}()
	<-obs.entered
	if !r.seq.hasInflight() {
		t.Fatal("the held apply left nothing in flight")
	}

	const held = 5
	var wg sync.WaitGroup
	revs := make(chan int64, held)
	for i := range held {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := r.Write(ctx, putTxn(fmt.Sprintf("held%d", i), "v"))
			if err != nil {
				t.Error(err)
				return
			}
			revs <- resp.Header.Revision
		}()
	}
	// Wait until the sequencer holds every write: only the end of the sync
	// lets them go.
	for r.seq.heldForSync.Load() != held {
		waitOrFail(ctx, t, fmt.Sprintf("the sequencer holds %d of %d writes", r.seq.heldForSync.Load(), held))
	}
	r.alloc.mu.Lock()
	calls := r.alloc.calls
	r.alloc.mu.Unlock()
	if calls != callsBefore+1 {
		t.Fatalf("%d allocations during the sync, want 1 (the first write's)", calls-callsBefore)
	}

	end.Do(gate.SyncEnded)
	release.Do(func() { close(obs.released) })
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(revs)
	r.alloc.mu.Lock()
	calls = r.alloc.calls
	r.alloc.mu.Unlock()
	if calls != callsBefore+2 {
		t.Fatalf("the %d held writes took %d allocations, want 1", held, calls-callsBefore-1)
	}
	seen := make(map[int64]bool)
	for rev := range revs {
		seen[rev] = true
	}
	if len(seen) != held {
		t.Fatalf("held writes got revisions %v, want %d distinct", seen, held)
	}
}

// waitOrFail waits a millisecond, or fails the test with msg once ctx is
// done.
func waitOrFail(ctx context.Context, t *testing.T, msg string) {
	t.Helper()
	select {
	case <-ctx.Done():
		t.Fatal(msg)
	case <-time.After(time.Millisecond):
	}
}
