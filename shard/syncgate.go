package shard

import "sync"

// SyncGate tells sequencers when the node's Raft log store is syncing, so
// that the writes arriving meanwhile share one entry.
//
// Dragonboat's step worker runs in rounds: it takes every proposal queued,
// saves the new entries to the log store, waits for the sync, then starts
// the next round. A proposal made during a sync therefore waits for the
// next round whatever it does, and so does every write after it. Proposed
// one by one, they became entries of 3-4 writes each under a 100-client
// load (several per round), and each entry has its own costs: its
// revisions from the TSO, its proposal, its key in the log store, its
// completion. A sequencer with an entry in flight instead holds writes
// that arrive during a sync and proposes them together when it ends,
// still in time for the next round. A write that arrives while no sync
// runs is proposed at once, so that an idle node answers without delay.
type SyncGate struct {
	mu      sync.Mutex
	syncing int           // syncs in progress
	end     chan struct{} // closed when syncing drops to 0; nil while 0
	ended   uint64        // syncs ended so far
	skipped uint64        // syncs the log store asked for and did not need
}

// NewSyncGate returns a gate with no sync in progress.
func NewSyncGate() *SyncGate { return &SyncGate{} }

// SyncStarted records that the log store started a sync.
func (g *SyncGate) SyncStarted() {
	g.mu.Lock()
	g.syncing++
	if g.end == nil {
		g.end = make(chan struct{})
	}
	g.mu.Unlock()
}

// SyncEnded records that a sync ended.
func (g *SyncGate) SyncEnded() {
	g.mu.Lock()
	g.syncing--
	g.ended++
	if g.syncing == 0 && g.end != nil {
		close(g.end)
		g.end = nil
	}
	g.mu.Unlock()
}

// SyncSkipped records that the log store asked for a sync that its
// writes since the last one did not need (a commit index alone), and
// made none.
func (g *SyncGate) SyncSkipped() {
	g.mu.Lock()
	g.skipped++
	g.mu.Unlock()
}

// inSync returns a channel closed when the syncs in progress end, or nil
// when none is in progress (or g is nil).
func (g *SyncGate) inSync() <-chan struct{} {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.end == nil {
		return nil
	}
	return g.end
}

// Syncs returns how many syncs have ended, and how many were skipped.
func (g *SyncGate) Syncs() (ended, skipped uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ended, g.skipped
}
