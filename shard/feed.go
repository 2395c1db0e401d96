package shard

import (
	"context"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/basaltpb"
)

// FeedItem is what a shard publishes to its watchers, in order: the events
// of the writes applied by one Update (revision order, a revision's events
// together), and the shard's resolved revision after them: every write of
// the shard at or below Resolved is in this item or an earlier one.
type FeedItem struct {
	Events []*mvccpb.Event
	// Subs are the events' sub revisions: a transaction across shards
	// numbers its changes across them, and a watch merging shards orders a
	// revision's events by them.
	Subs     []int64
	Resolved int64
	// Replaced says that a Raft snapshot replaced the shard's state: the
	// writes up to Resolved that it brought were not published, and the
	// events of earlier items still waiting may be outdated. Watchers catch
	// up from the change log, which the snapshot holds.
	Replaced bool
}

// Observer receives a shard's feed. Observe is called from the apply
// goroutine (events) and from the replica's resolver (resolved revisions
// when idle); it must not block. Items reach it in an order where every
// event at or below an item's Resolved came in that item or before it.
type Observer interface {
	Observe(FeedItem)
}

type observerRef struct{ Observer }

// SetObserver directs the shard's feed to o (nil stops it).
func (s *DataStateMachine) SetObserver(o Observer) {
	if o == nil {
		s.observer.Store(nil)
		return
	}
	s.observer.Store(&observerRef{o})
}

// publish sends a committed batch's events to the observer.
func (s *DataStateMachine) publish(events []*mvccpb.Event, subs []int64, resolved int64) {
	if ref := s.observer.Load(); ref != nil {
		ref.Observe(FeedItem{Events: events, Subs: subs, Resolved: resolved})
	}
}

// publishReplaced tells the observer that a snapshot replaced the shard's
// state, which is resolved up to resolved.
func (s *DataStateMachine) publishReplaced(resolved int64) {
	if ref := s.observer.Load(); ref != nil {
		ref.Observe(FeedItem{Resolved: resolved, Replaced: true})
	}
}

// resolveInterval is how often an idle leader advances its shard's resolved
// revision (DESIGN §7: at least every 100 ms).
const resolveInterval = 100 * time.Millisecond

// Observe directs the shard's feed to o.
func (r *Replica) Observe(o Observer) { r.sm.SetObserver(o) }

// startResolver starts the resolver, which advances the shard's resolved
// revision while the shard is idle. On the leader, every resolveInterval or
// at once after ResolveNow, it takes the TSO's current revision R and waits
// until every write of the shard at or below R is applied. If the shard's
// newest write is older than R (revisions went to other shards, or were
// lost to failed writes or a TSO failover), it proposes a ResolvedCommand:
// its apply publishes R on every replica, so that watchers on followers
// advance too. Otherwise it publishes R here.
func (r *Replica) startResolver() {
	r.wg.Add(1)
	go r.resolve()
}

// ResolveNow asks the resolver to publish a resolved revision now.
func (r *Replica) ResolveNow() {
	select {
	case r.resolvec <- struct{}{}:
	default:
	}
}

func (r *Replica) resolve() {
	defer r.wg.Done()
	t := time.NewTicker(resolveInterval)
	defer t.Stop()
	var proposed int64 // the newest resolved revision this leader proposed
	for {
		select {
		case <-r.stopc:
			return
		case <-t.C:
		case <-r.resolvec:
		}
		if !r.IsLeader() {
			continue
		}
		r.resolveExpiredLock()
		if err := r.resolveOnce(&proposed); err != nil && r.lg != nil {
			r.lg.Debug("resolve", zap.Uint64("shard-id", r.shardID), zap.Error(err))
		}
	}
}

func (r *Replica) resolveOnce(proposed *int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	rev, err := r.tso.Current(ctx)
	if err != nil {
		return err
	}
	if err := r.seq.WaitResolved(ctx, rev); err != nil {
		return err
	}
	if rev <= r.sm.Shard().Rev() || rev <= *proposed {
		r.sm.publish(nil, nil, rev)
		return nil
	}
	cmd, err := proto.Marshal(&basaltpb.DataCommand{Command: &basaltpb.DataCommand_Resolved{Resolved: &basaltpb.ResolvedCommand{Revision: rev}}})
	if err != nil {
		return err
	}
	if _, err := r.nh.SyncPropose(ctx, r.nh.GetNoOPSession(r.shardID), cmd); err != nil {
		return err
	}
	*proposed = rev
	return nil
}
