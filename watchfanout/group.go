package watchfanout

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.uber.org/zap"

	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/shard"
)

// Source is one shard replica on this node, as the fan-out uses it.
type Source interface {
	ShardID() uint64
	Shard() *mvcc.Shard
	// Observe directs the shard's feed (events, resolved revisions) to o.
	Observe(o shard.Observer)
	// ResolveNow asks for a resolved revision to be published now.
	ResolveNow()
}

const (
	// feedLen bounds the feed items waiting to be dispatched; past it a
	// group stops dispatching and catches its watchers up from the change
	// log instead (writers never wait for watchers).
	feedLen = 4096
	// maxWatchersPerSync and maxRevsPerSync bound one catch-up round, as
	// etcd bounds its syncs (512 watchers, 1000 revisions per response).
	maxWatchersPerSync = 512
	maxRevsPerSync     = 1000
	// syncInterval is how often waiting watchers are caught up.
	syncInterval = 100 * time.Millisecond
)

// group holds the watchers of one shard on this node. Synced watchers get
// each revision's events as the shard publishes them; unsynced ones (new
// watches from a past revision, slow consumers, watchers that lost events
// when the feed overflowed) are caught up from the change log, at most
// maxRevsPerSync revisions per response, until they reach the resolved
// revision and join the synced ones.
//
// Invariant: every event at or below resolved has been offered to the
// synced watchers (or is for a revision below their minRev); a watcher's
// minRev is the first revision it has not been sent.
type group struct {
	src Source
	lg  *zap.Logger

	feed     chan shard.FeedItem
	lost     atomic.Bool // the feed overflowed: items were dropped
	kickc    chan struct{}
	stopc    chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once

	mu        sync.Mutex
	resolved  int64
	resolvedc chan struct{} // closed when resolved advances
	synced    index
	unsynced  map[*watcher]struct{}
}

var _ shard.Observer = (*group)(nil)

func newGroup(src Source, lg *zap.Logger) *group {
	g := &group{
		src:       src,
		lg:        lg,
		feed:      make(chan shard.FeedItem, feedLen),
		kickc:     make(chan struct{}, 1),
		stopc:     make(chan struct{}),
		resolvedc: make(chan struct{}),
		synced:    newIndex(),
		unsynced:  make(map[*watcher]struct{}),
	}
	// Observe first, then read the applied revision: a write applied in
	// between is both published and at most the initial resolved revision,
	// and dispatching skips what a watcher's minRev says it has.
	src.Observe(g)
	g.resolved = src.Shard().Rev()
	g.wg.Add(2)
	go g.dispatchLoop()
	go g.syncLoop()
	return g
}

func (g *group) stop() {
	g.stopOnce.Do(func() {
		g.src.Observe(nil)
		close(g.stopc)
		g.wg.Wait()
	})
}

// Observe takes a feed item from the shard without blocking.
func (g *group) Observe(item shard.FeedItem) {
	select {
	case g.feed <- item:
	default:
		g.lost.Store(true)
	}
}

func (g *group) dispatchLoop() {
	defer g.wg.Done()
	for {
		select {
		case item := <-g.feed:
			g.dispatch(item)
		case <-g.stopc:
			return
		}
	}
}

// dispatch sends an item's events to the synced watchers, a response per
// revision and watcher, and advances the resolved revision.
func (g *group) dispatch(item shard.FeedItem) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.lost.Swap(false) {
		// Items were dropped: nobody can be trusted to be in step. Every
		// synced watcher catches up from the change log, which holds all
		// that was applied.
		for w := range g.synced.all {
			g.synced.remove(w)
			g.unsynced[w] = struct{}{}
		}
		g.advanceLocked(g.src.Shard().Rev())
	}
	evs := item.Events
	for i := 0; i < len(evs); {
		j, rev := i, evs[i].Kv.ModRevision
		for j < len(evs) && evs[j].Kv.ModRevision == rev {
			j++
		}
		g.notifyLocked(rev, evs[i:j])
		i = j
	}
	g.advanceLocked(item.Resolved)
	if len(g.unsynced) > 0 {
		g.kick()
	}
}

func (g *group) notifyLocked(rev int64, evs []*mvccpb.Event) {
	if g.synced.empty() {
		return
	}
	batches := make(map[*watcher][]*mvccpb.Event)
	for _, ev := range evs {
		g.synced.match(ev.Kv.Key, func(w *watcher) {
			if rev >= w.minRev {
				batches[w] = append(batches[w], ev)
			}
		})
	}
	for w, b := range batches {
		if !w.send(Response{WatchID: w.id, Events: b, Revision: rev}) {
			// A slow consumer: it catches up from the change log, starting
			// with this revision, without holding anybody up.
			g.synced.remove(w)
			g.unsynced[w] = struct{}{}
			continue
		}
		w.minRev = rev + 1
	}
}

func (g *group) advanceLocked(rev int64) {
	if rev > g.resolved {
		g.resolved = rev
		close(g.resolvedc)
		g.resolvedc = make(chan struct{})
	}
}

// waitResolved waits until the group has dispatched everything up to rev.
func (g *group) waitResolved(ctx context.Context, rev int64) error {
	for {
		g.mu.Lock()
		done, ch := g.resolved >= rev, g.resolvedc
		g.mu.Unlock()
		if done {
			return nil
		}
		g.src.ResolveNow()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-g.stopc:
			return errClosed
		}
	}
}

var errClosed = errors.New("watchfanout: closed")

func (g *group) kick() {
	select {
	case g.kickc <- struct{}{}:
	default:
	}
}

func (g *group) syncLoop() {
	defer g.wg.Done()
	t := time.NewTicker(syncInterval)
	defer t.Stop()
	for {
		select {
		case <-g.stopc:
			return
		case <-t.C:
		case <-g.kickc:
		}
		for g.syncOnce() {
		}
	}
}

// syncOnce runs one catch-up round and reports whether another could make
// progress at once.
func (g *group) syncOnce() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.unsynced) == 0 {
		return false
	}
	cur := g.resolved
	sh := g.src.Shard()
	compacted := sh.CompactRev()
	chosen := make([]*watcher, 0, min(len(g.unsynced), maxWatchersPerSync))
	from := int64(-1)
	for w := range g.unsynced {
		if len(chosen) == maxWatchersPerSync {
			break
		}
		if w.minRev < compacted {
			// The revisions it needs are gone: cancel it as etcd does.
			if w.send(Response{WatchID: w.id, CompactRevision: compacted}) {
				w.compacted = true
				delete(g.unsynced, w)
			}
			continue
		}
		if w.minRev > cur {
			continue // waits for the shard to resolve its start revision
		}
		chosen = append(chosen, w)
		if from < 0 || w.minRev < from {
			from = w.minRev
		}
	}
	if len(chosen) == 0 {
		return false
	}
	evs, more, err := sh.Changes(context.Background(), from, cur, maxRevsPerSync)
	if err != nil {
		if !errors.Is(err, mvcc.ErrCompacted) {
			g.lg.Warn("watch-catch-up", zap.Uint64("shard-id", g.src.ShardID()), zap.Error(err))
		}
		return false // compacted meanwhile: the next round cancels them
	}
	upTo := cur
	if more != 0 {
		upTo = more - 1
	}
	progressed := false
	for _, w := range chosen {
		var wevs []*mvccpb.Event
		for _, ev := range evs {
			if ev.Kv.ModRevision >= w.minRev && w.contains(ev.Kv.Key) {
				wevs = append(wevs, ev)
			}
		}
		if len(wevs) > 0 && !w.send(Response{WatchID: w.id, Events: wevs, Revision: cur}) {
			continue // still slow: next round
		}
		progressed = true
		w.minRev = max(w.minRev, upTo+1)
		if upTo == cur {
			delete(g.unsynced, w)
			g.synced.add(w)
		}
	}
	return progressed && more != 0
}

// add registers a watcher: synced when it starts after the resolved
// revision, else caught up from the change log.
func (g *group) add(w *watcher) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if w.minRev > g.resolved {
		g.synced.add(w)
		return
	}
	g.unsynced[w] = struct{}{}
	g.kick()
}

// remove drops a watcher from the group.
func (g *group) remove(w *watcher) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.unsynced[w]; ok {
		delete(g.unsynced, w)
		return
	}
	g.synced.remove(w)
}

// progress sends a progress response (no events) on behalf of watchers when
// every one of them is synced and the resolved revision has reached its
// start revision, as etcd does; it reports whether it sent.
func (g *group) progress(ws []*watcher, id int64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, w := range ws {
		if !g.synced.has(w) || g.resolved < w.startRev {
			return false
		}
	}
	if len(ws) == 0 {
		return true
	}
	ws[0].send(Response{WatchID: id, Revision: g.resolved})
	return true
}

// rev returns the resolved revision.
func (g *group) rev() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.resolved
}

// index finds the synced watchers of a key: by exact key, and by range.
type index struct {
	all    map[*watcher]struct{}
	keys   map[string]map[*watcher]struct{}
	ranges map[*watcher]struct{}
}

func newIndex() index {
	return index{all: map[*watcher]struct{}{}, keys: map[string]map[*watcher]struct{}{}, ranges: map[*watcher]struct{}{}}
}

func (x *index) empty() bool { return len(x.all) == 0 }

func (x *index) has(w *watcher) bool {
	_, ok := x.all[w]
	return ok
}

func (x *index) add(w *watcher) {
	x.all[w] = struct{}{}
	if w.end == nil {
		set := x.keys[string(w.key)]
		if set == nil {
			set = map[*watcher]struct{}{}
			x.keys[string(w.key)] = set
		}
		set[w] = struct{}{}
		return
	}
	x.ranges[w] = struct{}{}
}

func (x *index) remove(w *watcher) {
	if _, ok := x.all[w]; !ok {
		return
	}
	delete(x.all, w)
	if w.end == nil {
		set := x.keys[string(w.key)]
		delete(set, w)
		if len(set) == 0 {
			delete(x.keys, string(w.key))
		}
		return
	}
	delete(x.ranges, w)
}

func (x *index) match(key []byte, f func(*watcher)) {
	for w := range x.keys[string(key)] {
		f(w)
	}
	for w := range x.ranges {
		if w.contains(key) {
			f(w)
		}
	}
}

// containsKey reports whether key is in [start, end) with etcd's range ends:
// nil is the single key start, empty (non-nil) means no upper bound.
func containsKey(start, end, key []byte) bool {
	if end == nil {
		return bytes.Equal(key, start)
	}
	return bytes.Compare(key, start) >= 0 && (len(end) == 0 || bytes.Compare(key, end) < 0)
}
