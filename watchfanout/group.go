package watchfanout

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"math"
	"slices"
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
	// Resolved returns the shard's resolved revision on this replica.
	Resolved() int64
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
	// maxPendingRevs bounds the revisions held back by a shard that has
	// not resolved them; past it, watchers catch up from the change log.
	maxPendingRevs = 4 * feedLen
	// syncInterval is how often waiting watchers are caught up.
	syncInterval = 100 * time.Millisecond
)

// group holds the watchers of this node, fed by every shard replica on
// the node. Synced watchers get each revision's events once every shard
// has resolved it (the minimum of the shards' resolved revisions), in
// revision order; unsynced ones (new watches from a past revision, slow
// consumers, watchers that lost events when the feed overflowed) are
// caught up from the shards' change logs, at most maxRevsPerSync revisions
// per response, until they reach the resolved revision and join the synced
// ones.
//
// Invariant: every event at or below resolved has been offered to the
// synced watchers (or is for a revision below their minRev); a watcher's
// minRev is the first revision it has not been sent.
//
// Resolved advances only while the sources' spans cover the key space. A
// split shortens its shard's span when it applies, before the new shard's
// replica starts and joins the group (AddSource): until then the new
// shard's writes are nobody's, and resolved waits for them.
type group struct {
	lg *zap.Logger

	feed     chan sourceItem
	lost     atomic.Bool // the feed overflowed: items were dropped
	kickc    chan struct{}
	stopc    chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once

	mu        sync.Mutex
	sources   []*source
	pending   map[int64][]pendingEvent // fed, not yet resolved on every shard
	resolved  int64
	resolvedc chan struct{} // closed when resolved advances
	synced    index
	unsynced  map[*watcher]struct{}
}

// source is one shard replica feeding the group.
type source struct {
	g   *group
	src Source
	// resolved is the shard's resolved revision as its feed told it; the
	// group's mutex guards it.
	resolved int64
	// loaded is the revision up to which the group took the shard's events
	// from its change log when it joined: fed events at or below it are
	// already pending.
	loaded int64
}

// sourceItem is a feed item and the shard it came from.
type sourceItem struct {
	s    *source
	item shard.FeedItem
}

var _ shard.Observer = (*source)(nil)

func newGroup(lg *zap.Logger) *group {
	g := &group{
		lg:        lg,
		feed:      make(chan sourceItem, feedLen),
		kickc:     make(chan struct{}, 1),
		stopc:     make(chan struct{}),
		pending:   make(map[int64][]pendingEvent),
		resolvedc: make(chan struct{}),
		synced:    newIndex(),
		unsynced:  make(map[*watcher]struct{}),
	}
	g.wg.Add(2)
	go g.dispatchLoop()
	go g.syncLoop()
	return g
}

// addSource starts feeding the group from a shard replica.
func (g *group) addSource(src Source) {
	s := &source{g: g, src: src}
	// Observe first, then read the applied revision: a write applied in
	// between is both published and at most the initial resolved revision,
	// and dispatching skips what a watcher's minRev says it has.
	src.Observe(s)
	g.mu.Lock()
	defer g.mu.Unlock()
	// The replica's resolved revision, not just its newest write: a marker
	// it applied before it joined is not published again.
	s.resolved = max(src.Shard().Rev(), src.Resolved())
	if from := max(g.resolved, src.Shard().BornRev()) + 1; len(g.sources) > 0 && s.resolved >= from {
		// The shard applied writes before it joined (a split's child that
		// caught up, or got a snapshot, before its replica was served):
		// their events were never fed. Take them from its change log, from
		// its birth on (its parent fed the changes of its keys before).
		evs, subs, _, err := mvcc.ChangesIn(context.Background(), []*mvcc.Shard{src.Shard()}, from, s.resolved, math.MaxInt)
		if err != nil {
			g.lost.Store(true) // every watcher catches up from the change logs
		} else {
			for i, ev := range evs {
				g.pending[ev.Kv.ModRevision] = append(g.pending[ev.Kv.ModRevision], pendingEvent{sub: subs[i], ev: ev})
			}
			s.loaded = s.resolved
		}
	}
	g.sources = append(g.sources, s)
	if len(g.sources) == 1 {
		g.advanceLocked(s.resolved)
	}
	// The spans may cover the key space again, with events held back while
	// they did not. Release them now: an idle shard may publish nothing more.
	g.releaseLocked()
}

func (g *group) stop() {
	g.stopOnce.Do(func() {
		g.mu.Lock()
		sources := g.sources
		g.mu.Unlock()
		for _, s := range sources {
			s.src.Observe(nil)
		}
		close(g.stopc)
		g.wg.Wait()
	})
}

// Observe takes a feed item from the shard without blocking.
func (s *source) Observe(item shard.FeedItem) {
	select {
	case s.g.feed <- sourceItem{s: s, item: item}:
	default:
		s.g.lost.Store(true)
	}
}

func (g *group) dispatchLoop() {
	defer g.wg.Done()
	for {
		select {
		case si := <-g.feed:
			g.dispatch(si)
		case <-g.stopc:
			return
		}
	}
}

// dispatch takes an item's events and its shard's resolved revision, and
// sends the events of every revision all shards have resolved to the
// synced watchers, a response per revision and watcher.
func (g *group) dispatch(si sourceItem) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.lost.Swap(false) || len(g.pending) > maxPendingRevs || si.item.Replaced {
		// Items were dropped, a shard that does not resolve holds too many
		// back, or a snapshot replaced a shard's state without publishing
		// its writes: nobody can be trusted to be in step. Every synced
		// watcher catches up from the change log, which holds all that was
		// applied.
		for w := range g.synced.all {
			g.synced.remove(w)
			g.unsynced[w] = struct{}{}
		}
		clear(g.pending)
		for _, s := range g.sources {
			s.resolved = max(s.resolved, s.src.Shard().Rev())
		}
	}
	si.s.resolved = max(si.s.resolved, si.item.Resolved)
	// With no synced watcher, the events this call releases have nobody to
	// go to: they need not wait in pending (under a write load without
	// watchers, that was a map entry and a slice per event).
	var unheard int64
	if g.synced.empty() {
		unheard, _ = g.releasableLocked()
	}
	for i, ev := range si.item.Events {
		rev := ev.Kv.ModRevision
		if rev <= si.s.loaded {
			continue // taken from the change log when the shard joined
		}
		if rev <= unheard {
			continue
		}
		pe := pendingEvent{ev: ev}
		if i < len(si.item.Subs) {
			pe.sub = si.item.Subs[i]
		}
		g.pending[rev] = append(g.pending[rev], pe)
	}
	g.releaseLocked()
	if len(g.unsynced) > 0 {
		g.kick()
	}
}

// releaseLocked dispatches the pending revisions every shard has resolved,
// in order, and advances the group's resolved revision.
func (g *group) releaseLocked() {
	upTo, ok := g.releasableLocked()
	if !ok {
		return
	}
	if upTo <= g.resolved {
		if len(g.pending) > 0 {
			// A shard holds the others back: ask it to resolve now.
			for _, s := range g.sources {
				if s.resolved == upTo {
					s.src.ResolveNow()
				}
			}
		}
		return
	}
	var revs []int64
	for rev := range g.pending {
		if rev <= upTo {
			revs = append(revs, rev)
		}
	}
	slices.Sort(revs)
	for _, rev := range revs {
		if !g.synced.empty() { // else nobody to tell, and no events to order
			g.notifyLocked(rev, inSubOrder(g.pending[rev]))
		}
		delete(g.pending, rev)
	}
	g.advanceLocked(upTo)
}

// releasableLocked returns the revision up to which every shard has
// resolved, when the sources cover the key space.
func (g *group) releasableLocked() (upTo int64, ok bool) {
	if !g.coveredLocked() {
		return 0, false
	}
	upTo = g.sources[0].resolved
	for _, s := range g.sources[1:] {
		upTo = min(upTo, s.resolved)
	}
	return upTo, true
}

// coveredLocked reports whether the sources' spans cover the key space
// (see group).
func (g *group) coveredLocked() bool {
	switch len(g.sources) {
	case 0:
		return false
	case 1: // the common case, on every feed item: no allocation
		start, end := g.sources[0].src.Shard().Span()
		return len(start) == 0 && len(end) == 0
	}
	spans := make([][2][]byte, len(g.sources))
	for i, s := range g.sources {
		spans[i][0], spans[i][1] = s.src.Shard().Span()
	}
	slices.SortFunc(spans, func(a, b [2][]byte) int { return bytes.Compare(a[0], b[0]) })
	if len(spans[0][0]) != 0 {
		return false
	}
	for i := 1; i < len(spans); i++ {
		if !bytes.Equal(spans[i-1][1], spans[i][0]) {
			return false
		}
	}
	return len(spans[len(spans)-1][1]) == 0
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
		g.resolveNow(rev)
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

// resolveNow asks the shards that have not resolved rev to publish a
// resolved revision now.
func (g *group) resolveNow(rev int64) {
	g.mu.Lock()
	var late []Source
	for _, s := range g.sources {
		if s.resolved < rev {
			late = append(late, s.src)
		}
	}
	g.mu.Unlock()
	for _, src := range late {
		src.ResolveNow()
	}
}

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
	compacted := g.compactRevLocked()
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
	evs, more, err := g.changesLocked(from, cur)
	if err != nil {
		if !errors.Is(err, mvcc.ErrCompacted) {
			g.lg.Warn("watch-catch-up", zap.Error(err))
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

// compactRevLocked is the highest compacted revision of the shards: below
// it, some shard's change log is gone.
func (g *group) compactRevLocked() int64 {
	rev := int64(-1)
	for _, s := range g.sources {
		rev = max(rev, s.src.Shard().CompactRev())
	}
	return rev
}

// changesLocked reads the events of revisions [from, to] from every
// shard's change log, at most maxRevsPerSync revisions of each, merged in
// revision order (Shard.Changes). more is the first revision left out, 0
// when none was.
func (g *group) changesLocked(from, to int64) (evs []*mvccpb.Event, more int64, err error) {
	shards := make([]*mvcc.Shard, len(g.sources))
	for i, s := range g.sources {
		shards[i] = s.src.Shard()
	}
	evs, _, more, err = mvcc.ChangesIn(context.Background(), shards, from, to, maxRevsPerSync)
	return evs, more, err
}

// prevKV returns key's value just before rev, from the shard that holds
// key. Responses look it up when they are sent, and by then no source may
// hold the key here any more: a split shrank its shard before the child's
// replica joined, or the replica stopped. The key's versions are in this
// node's store all the same (its shards share one), and then the most
// compacted source reads them: its compaction revision bounds the read as
// the key's own shard's would.
func (g *group) prevKV(key []byte, rev int64) (*mvccpb.KeyValue, error) {
	g.mu.Lock()
	var holder, mostCompacted *mvcc.Shard
	for _, s := range g.sources {
		sh := s.src.Shard()
		if sh.Contains(key) {
			holder = sh
		}
		if mostCompacted == nil || sh.CompactRev() > mostCompacted.CompactRev() {
			mostCompacted = sh
		}
	}
	g.mu.Unlock()
	sh := cmp.Or(holder, mostCompacted)
	if sh == nil {
		return nil, nil
	}
	return sh.PrevKV(key, rev)
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

// pendingEvent is an event waiting for every shard to resolve its
// revision, with its sub revision.
type pendingEvent struct {
	sub int64
	ev  *mvccpb.Event
}

// inSubOrder returns a revision's events in sub revision order: the
// order of the transaction's operations, also when shards fed them apart.
func inSubOrder(pes []pendingEvent) []*mvccpb.Event {
	slices.SortStableFunc(pes, func(a, b pendingEvent) int { return cmp.Compare(a.sub, b.sub) })
	evs := make([]*mvccpb.Event, len(pes))
	for i, pe := range pes {
		evs[i] = pe.ev
	}
	return evs
}
