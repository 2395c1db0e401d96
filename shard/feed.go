package shard

import (
	"context"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.uber.org/zap"
)

// FeedItem is what a shard publishes to its watchers, in order: the events
// of the writes applied by one Update (revision order, a revision's events
// together), and the shard's resolved revision after them: every write of
// the shard at or below Resolved is in this item or an earlier one.
type FeedItem struct {
	Events   []*mvccpb.Event
	Resolved int64
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
func (s *DataStateMachine) publish(events []*mvccpb.Event, resolved int64) {
	if ref := s.observer.Load(); ref != nil {
		ref.Observe(FeedItem{Events: events, Resolved: resolved})
	}
}

// resolveInterval is how often an idle leader advances its shard's resolved
// revision (DESIGN §7: at least every 100 ms).
const resolveInterval = 100 * time.Millisecond

// Observe directs the shard's feed to o and starts the resolver, which
// advances the resolved revision while the shard is idle: every
// resolveInterval, or at once after ResolveNow, it takes the TSO's current
// revision R, waits until every write of the shard at or below R is applied,
// and publishes R.
func (r *Replica) Observe(o Observer) {
	r.sm.SetObserver(o)
	r.resolverOnce.Do(func() {
		r.wg.Add(1)
		go r.resolve()
	})
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
		if err := r.resolveOnce(); err != nil && r.lg != nil {
			r.lg.Debug("resolve", zap.Uint64("shard-id", r.shardID), zap.Error(err))
		}
	}
}

func (r *Replica) resolveOnce() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	rev, err := r.tso.Current(ctx)
	if err != nil {
		return err
	}
	if err := r.seq.WaitResolved(ctx, rev); err != nil {
		return err
	}
	r.sm.publish(nil, rev)
	return nil
}
