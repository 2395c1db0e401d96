package shard

import (
	"context"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/client"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/basaltpb"
)

// gatedProposer holds the proposal of a lock until release is closed,
// after telling proposing, and tells proposed once it is in the log; other
// proposals pass.
type gatedProposer struct {
	inner     Proposer
	proposing chan struct{}
	release   chan struct{}
	proposed  chan struct{}
}

func (g *gatedProposer) Propose(s *client.Session, cmd []byte, timeout time.Duration) (*dragonboat.RequestState, error) {
	dc := &basaltpb.DataCommand{}
	if proto.Unmarshal(cmd, dc) != nil || dc.GetLock() == nil {
		return g.inner.Propose(s, cmd, timeout)
	}
	close(g.proposing)
	<-g.release
	defer close(g.proposed)
	return g.inner.Propose(s, cmd, timeout)
}

// A coordinator that gives up on a lock while the sequencer proposes it
// aborts next. The abort must reach the log after the lock: before it, it
// finds nothing to drop, and the lock then freezes the shard until its TTL.
func TestAbortAfterAbandonedLockDropsIt(t *testing.T) {
	r := startReplica(t, SequencerConfig{})
	gate := &gatedProposer{inner: r.seq.proposer, proposing: make(chan struct{}), release: make(chan struct{}), proposed: make(chan struct{})}
	r.seq.proposer = gate // before any proposal: the lock request below orders it

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	lock := &basaltpb.DataCommand{Command: &basaltpb.DataCommand_Lock{Lock: &basaltpb.LockCommand{
		TxnId: 7, StartRevision: 1, PrimaryShard: r.ShardID(), TtlMs: time.Hour.Milliseconds(),
		Spans: []*basaltpb.KeyRange{{Key: []byte("k")}},
	}}}
	lctx, giveUp := context.WithCancel(ctx)
	locked := make(chan error, 1)
	go func() {
		_, err := r.TxnStep(lctx, lock)
		locked <- err
	}()
	<-gate.proposing
	giveUp()
	abort := func() {
		t.Helper()
		res, err := r.TxnStep(ctx, &basaltpb.DataCommand{Command: &basaltpb.DataCommand_Abort{Abort: &basaltpb.AbortCommand{TxnId: 7}}})
		if err != nil || CodeError(res.Error) != nil {
			t.Fatalf("abort: %v %v", res, err)
		}
	}
	// The coordinator aborts as soon as its lock step returns.
	select {
	case <-locked:
		abort()
		close(gate.release)
	case <-time.After(200 * time.Millisecond):
		close(gate.release)
		<-locked
		abort()
	}
	// Whatever the order, once the lock and the abort are applied, the
	// shard must not hold the lock.
	<-gate.proposed
	for {
		r.seq.mu.Lock()
		done := r.seq.locking == nil // the sequencer saw the lock applied
		r.seq.mu.Unlock()
		if done {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if l := r.sm.PendingLock(); l != nil {
		t.Fatalf("the shard holds transaction %x's lock after its abort", l.TxnId)
	}
}

// The primary keeps its commit record for the shards that have not
// committed their parts yet: each ForgetCommand drops the shards it names,
// and the record goes with the last one.
func TestForgetDropsCommittedShardsFromTheRecord(t *testing.T) {
	r := startReplica(t, SequencerConfig{})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	step := func(cmd *basaltpb.DataCommand) *basaltpb.TxnResult {
		t.Helper()
		res, err := r.TxnStep(ctx, cmd)
		if err != nil || CodeError(res.Error) != nil {
			t.Fatalf("%v: %v %v", cmd, res, err)
		}
		return res
	}
	const id = 9
	step(&basaltpb.DataCommand{Command: &basaltpb.DataCommand_Lock{Lock: &basaltpb.LockCommand{
		TxnId: id, StartRevision: 1, PrimaryShard: r.ShardID(), TtlMs: time.Hour.Milliseconds(),
		Spans: []*basaltpb.KeyRange{{Key: []byte("k")}},
	}}})
	writesOf := func(rev int64) *basaltpb.ShardWrites {
		return &basaltpb.ShardWrites{Revisions: []*basaltpb.RevisionWrites{{Revision: rev}}}
	}
	step(&basaltpb.DataCommand{Command: &basaltpb.DataCommand_Commit{Commit: &basaltpb.CommitCommand{
		TxnId: id, Primary: true, Record: map[uint64]*basaltpb.ShardWrites{20: writesOf(2), 30: writesOf(3)},
	}}})
	// What a shard whose lock outlived the coordinator asks the primary.
	resolve := func(sid uint64) *basaltpb.TxnResult {
		t.Helper()
		return step(&basaltpb.DataCommand{Command: &basaltpb.DataCommand_Abort{Abort: &basaltpb.AbortCommand{TxnId: id, ForShard: sid}}})
	}
	forget := func(shards ...uint64) {
		t.Helper()
		step(&basaltpb.DataCommand{Command: &basaltpb.DataCommand_Forget{Forget: &basaltpb.ForgetCommand{TxnId: id, Shards: shards}}})
	}
	if res := resolve(30); !res.Committed || res.Writes.GetRevisions()[0].Revision != 3 {
		t.Fatalf("shard 30 before any forget: %v", res)
	}
	forget(30, 40) // 40 had no writes: it is not in the record
	if res := resolve(20); !res.Committed || res.Writes.GetRevisions()[0].Revision != 2 {
		t.Fatalf("shard 20 after shard 30 was forgotten: %v", res)
	}
	forget(20)
	if res := resolve(20); res.Committed {
		t.Fatalf("the record is still there once every shard was forgotten: %v", res)
	}
	forget(20) // a repeated forget, or one of a record gone: nothing to do
	forget()
}
