package watchfanout

import (
	"bytes"
	"context"
	"errors"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.uber.org/zap"
)

// Errors of Watch and Cancel, with etcd's messages (they reach clients as a
// created-and-canceled response's cancel_reason).
var (
	ErrEmptyRange   = errors.New("mvcc: watcher range is empty")
	ErrDuplicateID  = errors.New("mvcc: duplicate watch ID provided on the WatchStream")
	ErrNotExist     = errors.New("mvcc: watcher does not exist")
	errStreamClosed = errors.New("watchfanout: stream closed")
)

// AutoWatchID asks Watch to pick the id (clientv3.AutoWatchID).
const AutoWatchID int64 = 0

// InvalidWatchID is the id of responses that belong to no watch
// (clientv3.InvalidWatchID).
const InvalidWatchID int64 = -1

// Filter drops events of one type.
type Filter int

// The filters of etcd's WatchCreateRequest.
const (
	NoPut Filter = iota
	NoDelete
)

// Response is what a stream delivers for one watch: events of one or more
// revisions (Revision is the header revision), a progress notification (no
// events), or a cancellation because the revisions it needs are compacted.
type Response struct {
	WatchID         int64
	Events          []*mvccpb.Event
	Revision        int64
	CompactRevision int64
}

// respBufLen is a stream's buffer; a watcher whose stream is full becomes a
// slow consumer and catches up later (etcd's chanBufLen).
const respBufLen = 128

// watcher is one watch of a stream in one group.
type watcher struct {
	id       int64
	key, end []byte
	startRev int64
	minRev   int64
	filters  []Filter
	stream   *Stream
	group    *group

	compacted bool // set under the group's lock
}

func (w *watcher) contains(key []byte) bool { return containsKey(w.key, w.end, key) }

// send delivers a response without blocking; false means the stream is
// full. Filters drop events; a response they empty is not sent (but
// counts as delivered). A response without events is a progress report.
func (w *watcher) send(r Response) bool {
	if len(w.filters) > 0 && len(r.Events) > 0 {
		kept := make([]*mvccpb.Event, 0, len(r.Events))
		for _, ev := range r.Events {
			if !w.filtered(ev) {
				kept = append(kept, ev)
			}
		}
		if len(kept) == 0 {
			return true
		}
		r.Events = kept
	}
	select {
	case w.stream.ch <- r:
		return true
	default:
		return false
	}
}

func (w *watcher) filtered(ev *mvccpb.Event) bool {
	for _, f := range w.filters {
		if (f == NoPut && ev.Type == mvccpb.PUT) || (f == NoDelete && ev.Type == mvccpb.DELETE) {
			return true
		}
	}
	return false
}

// Hub is the node's watch fan-out: one group of watchers fed by every
// shard replica on the node, and the streams of the node's clients.
type Hub struct {
	g       *group
	current func(ctx context.Context) (int64, error)
	lg      *zap.Logger
}

// NewHub starts watching the given shards. current returns the cluster's
// current revision (the TSO's).
func NewHub(sources []Source, current func(ctx context.Context) (int64, error), lg *zap.Logger) *Hub {
	if lg == nil {
		lg = zap.NewNop()
	}
	h := &Hub{g: newGroup(lg), current: current, lg: lg}
	for _, s := range sources {
		h.AddSource(s)
	}
	return h
}

// AddSource feeds the hub from one more shard replica (a shard created by
// a split).
func (h *Hub) AddSource(s Source) { h.g.addSource(s) }

// Close stops the group. Streams must be closed first.
func (h *Hub) Close() { h.g.stop() }

// Rev returns the revision a control response reports: the cluster's
// current revision, once every event up to it has been dispatched (so that
// no later response reports less).
func (h *Hub) Rev(ctx context.Context) (int64, error) {
	rev, err := h.current(ctx)
	if err != nil {
		return 0, err
	}
	if err := h.g.waitResolved(ctx, rev); err != nil {
		return 0, err
	}
	return rev, nil
}

// PrevKV returns key's value just before rev, for events with prev_kv.
func (h *Hub) PrevKV(key []byte, rev int64) (*mvccpb.KeyValue, error) {
	return h.g.prevKV(key, rev)
}

// Stream is one client watch stream: its watches and its responses.
type Stream struct {
	hub *Hub
	ch  chan Response

	mu       sync.Mutex
	nextID   int64
	watchers map[int64]*watcher
	closed   bool
}

// NewStream opens a stream.
func (h *Hub) NewStream() *Stream {
	return &Stream{hub: h, ch: make(chan Response, respBufLen), watchers: make(map[int64]*watcher)}
}

// Chan delivers the stream's responses; it is closed by Close.
func (s *Stream) Chan() <-chan Response { return s.ch }

// Watch creates a watch of [key, end) (end nil: the key alone; empty: every
// key from key on) from startRev (0: after the current revision). It
// returns the watch's id and the revision to report in its created
// response.
func (s *Stream) Watch(ctx context.Context, id int64, key, end []byte, startRev int64, filters []Filter) (int64, int64, error) {
	if len(end) != 0 && bytes.Compare(key, end) != -1 {
		return InvalidWatchID, 0, ErrEmptyRange
	}
	g := s.hub.g
	rev, err := s.hub.Rev(ctx)
	if err != nil {
		return InvalidWatchID, 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return InvalidWatchID, 0, errStreamClosed
	}
	if id == AutoWatchID {
		for s.watchers[s.nextID] != nil {
			s.nextID++
		}
		id = s.nextID
		s.nextID++
	} else if _, ok := s.watchers[id]; ok {
		return InvalidWatchID, 0, ErrDuplicateID
	}
	w := &watcher{id: id, key: key, end: end, startRev: startRev, minRev: startRev, filters: filters, stream: s, group: g}
	if startRev == 0 || startRev > rev {
		// From now on: nothing to catch up.
		w.minRev = max(rev+1, startRev)
	}
	s.watchers[id] = w
	g.add(w)
	return id, rev, nil
}

// Cancel ends a watch.
func (s *Stream) Cancel(id int64) error {
	s.mu.Lock()
	w, ok := s.watchers[id]
	if ok && !s.closed {
		delete(s.watchers, id)
	}
	closed := s.closed
	s.mu.Unlock()
	if !ok || closed {
		return ErrNotExist
	}
	w.group.remove(w)
	return nil
}

// RequestProgress sends a progress response for watch id (no events, the
// resolved revision) if it is synced.
func (s *Stream) RequestProgress(id int64) {
	s.mu.Lock()
	w, ok := s.watchers[id]
	s.mu.Unlock()
	if ok {
		w.group.progress([]*watcher{w}, id)
	}
}

// RequestProgressAll sends one progress response (watch id -1) if every
// watch of the stream is synced, as etcd's RequestProgress does.
func (s *Stream) RequestProgressAll() {
	s.mu.Lock()
	byGroup := make(map[*group][]*watcher)
	for _, w := range s.watchers {
		byGroup[w.group] = append(byGroup[w.group], w)
	}
	s.mu.Unlock()
	for g, ws := range byGroup {
		g.progress(ws, InvalidWatchID) // one group: one response at most
	}
}

// Close ends every watch and closes Chan.
func (s *Stream) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	ws := s.watchers
	s.watchers = nil
	s.mu.Unlock()
	for _, w := range ws {
		w.group.remove(w)
	}
	// No group holds a watcher of this stream any more, so nothing sends.
	close(s.ch)
}
