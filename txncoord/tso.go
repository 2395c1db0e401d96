package txncoord

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/basaltdb/basalt/proto/basaltpb"
)

// ErrTSONotReady is returned by a TSO that does not serve: it has not loaded
// its ceiling yet, or it stepped down.
var ErrTSONotReady = errors.New("txncoord: timestamp oracle not ready")

// MetaGroup is what the TSO needs of the meta group: a linearizable read of
// its state, a confirmation that this node still leads it (a ReadIndex),
// a wait until this node's replica caught up (Sync), and a proposal that
// returns once applied.
type MetaGroup interface {
	ReadState(ctx context.Context) (*basaltpb.MetaState, error)
	ConfirmLeader(ctx context.Context) error
	Sync(ctx context.Context) error
	Propose(ctx context.Context, cmd *basaltpb.MetaCommand) error
}

// TSO is the timestamp oracle that hands out cluster-wide revisions. It runs
// on the meta group's leader, keeps the next revision in memory and
// persists a ceiling a window ahead through the meta group's Raft log: no
// revision at or above the ceiling has been handed out. A TSO that starts
// (after a restart or a leader change) begins at the persisted ceiling, so
// the only gap a failover leaves is the unused rest of the window. A clean
// shutdown lowers the ceiling to the next revision (Release), so a clean
// restart leaves no gap.
//
// Revision 1 is the empty store's, as in etcd: the first write gets 2.
type TSO struct {
	meta   MetaGroup
	window int64

	mu      sync.Mutex
	ready   bool
	stops   int // Stop calls, so that a Start overtaken by a Stop does not serve
	next    int64
	ceiling int64
}

// DefaultTSOWindow is how far ahead of the next revision the ceiling is
// persisted.
const DefaultTSOWindow = 10000

// NewTSO returns a TSO over the meta group; it serves after Start.
func NewTSO(meta MetaGroup, window int64) *TSO {
	if window <= 0 {
		window = DefaultTSOWindow
	}
	return &TSO{meta: meta, window: window}
}

// Start loads the persisted ceiling and starts serving from it. Call it when
// this node becomes the meta group's leader. It fails if this node does not
// lead the group, or if Stop is called before it returns. A TSO that serves
// already goes on unchanged (restarting from the ceiling would skip the
// revisions below it).
func (t *TSO) Start(ctx context.Context) error {
	t.mu.Lock()
	stops, ready := t.stops, t.ready
	t.mu.Unlock()
	if ready {
		return nil
	}
	state, err := t.meta.ReadState(ctx)
	if err != nil {
		return err
	}
	if err := t.meta.ConfirmLeader(ctx); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stops != stops {
		return ErrTSONotReady
	}
	if t.ready {
		return nil // started by a concurrent Start
	}
	t.next = max(state.TsoCeiling, 2)
	t.ceiling = state.TsoCeiling
	t.ready = true
	return nil
}

// Stop stops serving (this node no longer leads the meta group).
func (t *TSO) Stop() {
	t.mu.Lock()
	t.ready = false
	t.stops++
	t.mu.Unlock()
}

// Allocate hands out n consecutive revisions and returns the first.
func (t *TSO) Allocate(ctx context.Context, n int) (int64, error) {
	if n <= 0 {
		return 0, fmt.Errorf("txncoord: allocate %d revisions", n)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.ready {
		return 0, ErrTSONotReady
	}
	if t.next+int64(n) > t.ceiling {
		ceiling := t.next + int64(n) + t.window
		if err := t.setCeilingLocked(ctx, ceiling); err != nil {
			return 0, err
		}
	}
	first := t.next
	t.next += int64(n)
	return first, nil
}

// Current returns the newest revision handed out (1 on an empty cluster),
// after confirming that this node still leads the meta group: a deposed TSO
// must not report an old revision as current.
func (t *TSO) Current(ctx context.Context) (int64, error) {
	t.mu.Lock()
	ready, cur := t.ready, t.next-1
	t.mu.Unlock()
	if !ready {
		return 0, ErrTSONotReady
	}
	if err := t.meta.ConfirmLeader(ctx); err != nil {
		return 0, err
	}
	return cur, nil
}

// Release lowers the persisted ceiling to the next revision and stops
// serving, so that the next TSO continues without a gap. Call it on a clean
// shutdown after the writers stopped.
func (t *TSO) Release(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.ready {
		return nil
	}
	t.ready = false
	return t.setCeilingLocked(ctx, t.next)
}

func (t *TSO) setCeilingLocked(ctx context.Context, ceiling int64) error {
	cmd := &basaltpb.MetaCommand{Command: &basaltpb.MetaCommand_SetTsoCeiling{SetTsoCeiling: &basaltpb.SetTSOCeiling{Ceiling: ceiling}}}
	if err := t.meta.Propose(ctx, cmd); err != nil {
		return err
	}
	t.ceiling = ceiling
	return nil
}
