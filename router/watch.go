package router

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/watchfanout"
)

// minProgressInterval is the shortest progress-notify interval etcd allows.
const minProgressInterval = 100 * time.Millisecond

// ctrlStreamLen buffers a stream's control responses (etcd's ctrlStreamBufLen).
const ctrlStreamLen = 16

// watchServer is etcd's Watch service over the node's watch fan-out. It
// follows etcd's v3rpc: a receive loop that creates and cancels watches and
// asks for progress, and a send loop that turns the fan-out's responses
// into WatchResponses (prev_kv, fragments, progress notifications), never
// sending a watch's events before its created response.
type watchServer struct {
	pb.UnimplementedWatchServer
	s *Server
}

type serverWatchStream struct {
	s      *Server
	grpc   pb.Watch_WatchServer
	stream *watchfanout.Stream
	ctrl   chan *pb.WatchResponse
	closec chan struct{}
	wg     sync.WaitGroup

	mu       sync.Mutex
	progress map[int64]bool // watches with progress_notify: no events since the last tick
	prevKV   map[int64]bool
	fragment map[int64]bool
}

func (ws *watchServer) Watch(stream pb.Watch_WatchServer) error {
	sws := &serverWatchStream{
		s:        ws.s,
		grpc:     stream,
		stream:   ws.s.hub.NewStream(),
		ctrl:     make(chan *pb.WatchResponse, ctrlStreamLen),
		closec:   make(chan struct{}),
		progress: make(map[int64]bool),
		prevKV:   make(map[int64]bool),
		fragment: make(map[int64]bool),
	}
	sws.wg.Add(1)
	go func() {
		defer sws.wg.Done()
		sws.sendLoop()
	}()
	errc := make(chan error, 1)
	go func() {
		if err := sws.recvLoop(); err != nil {
			errc <- err
		}
	}()
	var err error
	select {
	case err = <-errc:
		if errors.Is(err, context.Canceled) {
			err = rpctypes.ErrGRPCWatchCanceled
		}
	case <-stream.Context().Done():
		err = stream.Context().Err()
		if errors.Is(err, context.Canceled) {
			err = rpctypes.ErrGRPCWatchCanceled
		}
	}
	sws.stream.Close()
	close(sws.closec)
	sws.wg.Wait()
	return err
}

func (sws *serverWatchStream) header(rev int64) *pb.ResponseHeader {
	h := &pb.ResponseHeader{Revision: rev}
	sws.s.fillHeader(h)
	return h
}

// currentRev is the revision control responses report.
func (sws *serverWatchStream) currentRev() int64 {
	ctx, cancel := context.WithTimeout(sws.grpc.Context(), sws.s.cfg.RequestTimeout)
	defer cancel()
	rev, err := sws.s.hub.Rev(ctx)
	if err != nil {
		sws.s.lg.Debug("watch-current-revision", zap.Error(err))
	}
	return rev
}

func (sws *serverWatchStream) sendCtrl(wr *pb.WatchResponse) bool {
	select {
	case sws.ctrl <- wr:
		return true
	case <-sws.closec:
		return false
	}
}

func (sws *serverWatchStream) recvLoop() error {
	for {
		req, err := sws.grpc.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch uv := req.RequestUnion.(type) {
		case *pb.WatchRequest_CreateRequest:
			if uv.CreateRequest != nil && !sws.create(uv.CreateRequest) {
				return nil
			}
		case *pb.WatchRequest_CancelRequest:
			if uv.CancelRequest == nil {
				continue
			}
			id := uv.CancelRequest.WatchId
			if err := sws.stream.Cancel(id); err != nil {
				continue // etcd answers nothing for an unknown watch
			}
			if !sws.sendCtrl(&pb.WatchResponse{Header: sws.header(sws.currentRev()), WatchId: id, Canceled: true}) {
				return nil
			}
			sws.mu.Lock()
			delete(sws.progress, id)
			delete(sws.prevKV, id)
			delete(sws.fragment, id)
			sws.mu.Unlock()
		case *pb.WatchRequest_ProgressRequest:
			if uv.ProgressRequest != nil {
				sws.stream.RequestProgressAll()
			}
		}
	}
}

// create handles a WatchCreateRequest as etcd does; false means the stream
// is closing.
func (sws *serverWatchStream) create(creq *pb.WatchCreateRequest) bool {
	key, end := creq.Key, creq.RangeEnd
	if len(key) == 0 {
		key = []byte{0}
	}
	if creq.StartRevision < 0 {
		return sws.sendCtrl(&pb.WatchResponse{
			Header: sws.header(sws.currentRev()), WatchId: watchfanout.InvalidWatchID,
			Canceled: true, Created: true, CancelReason: rpctypes.ErrCompacted.Error(),
		})
	}
	switch {
	case len(end) == 0:
		end = nil
	case len(end) == 1 && end[0] == 0:
		end = []byte{}
	}
	var filters []watchfanout.Filter
	for _, f := range creq.Filters {
		switch f {
		case pb.WatchCreateRequest_NOPUT:
			filters = append(filters, watchfanout.NoPut)
		case pb.WatchCreateRequest_NODELETE:
			filters = append(filters, watchfanout.NoDelete)
		}
	}
	ctx, cancel := context.WithTimeout(sws.grpc.Context(), sws.s.cfg.RequestTimeout)
	id, rev, err := sws.stream.Watch(ctx, creq.WatchId, key, end, creq.StartRevision, filters)
	cancel()
	wr := &pb.WatchResponse{WatchId: id, Created: true}
	if err != nil {
		// The reason is etcd's message for the error: clientv3 hands it
		// to the application as the stream's error.
		reason := rpctypes.ErrorDesc(toGRPCError(sws.grpc.Context(), err))
		wr.WatchId, wr.Canceled, wr.CancelReason = watchfanout.InvalidWatchID, true, reason
		rev = sws.currentRev()
	} else {
		sws.mu.Lock()
		if creq.ProgressNotify {
			sws.progress[id] = true
		}
		if creq.PrevKv {
			sws.prevKV[id] = true
		}
		if creq.Fragment {
			sws.fragment[id] = true
		}
		sws.mu.Unlock()
	}
	wr.Header = sws.header(rev)
	return sws.sendCtrl(wr)
}

func (sws *serverWatchStream) sendLoop() {
	created := make(map[int64]bool)
	pending := make(map[int64][]*pb.WatchResponse)
	ticker := time.NewTicker(progressInterval(sws.s.cfg.WatchProgressNotifyInterval))
	defer ticker.Stop()
	for {
		select {
		case r, ok := <-sws.stream.Chan():
			if !ok {
				return
			}
			wr := sws.toResponse(r)
			if r.WatchID != watchfanout.InvalidWatchID && !created[r.WatchID] {
				// Events may overtake the created response: hold them.
				pending[r.WatchID] = append(pending[r.WatchID], wr)
				continue
			}
			if !sws.send(wr) {
				return
			}
			sws.mu.Lock()
			if len(r.Events) > 0 && sws.progress[r.WatchID] {
				sws.progress[r.WatchID] = false
			}
			sws.mu.Unlock()
		case c := <-sws.ctrl:
			if err := sws.grpc.Send(c); err != nil {
				return
			}
			if c.Canceled && c.WatchId != watchfanout.InvalidWatchID {
				delete(created, c.WatchId)
				continue
			}
			if c.Created {
				created[c.WatchId] = true
				for _, wr := range pending[c.WatchId] {
					if !sws.send(wr) {
						return
					}
				}
				delete(pending, c.WatchId)
			}
		case <-ticker.C:
			sws.mu.Lock()
			for id, quiet := range sws.progress {
				if quiet {
					sws.stream.RequestProgress(id)
				}
				sws.progress[id] = true
			}
			sws.mu.Unlock()
		case <-sws.closec:
			return
		}
	}
}

// toResponse builds the WatchResponse of a fan-out response, with prev_kv
// looked up when the watch asked for it (not for creations, which have
// none).
func (sws *serverWatchStream) toResponse(r watchfanout.Response) *pb.WatchResponse {
	sws.mu.Lock()
	needPrev := sws.prevKV[r.WatchID]
	sws.mu.Unlock()
	events := r.Events
	if needPrev && len(events) > 0 {
		events = make([]*mvccpb.Event, len(r.Events))
		for i, ev := range r.Events {
			// Events are shared between watchers: copy before adding to one.
			e := &mvccpb.Event{Type: ev.Type, Kv: ev.Kv}
			if !(ev.Type == mvccpb.PUT && ev.Kv.CreateRevision == ev.Kv.ModRevision) {
				if prev, err := sws.s.hub.PrevKV(ev.Kv.Key, ev.Kv.ModRevision); err == nil && prev != nil {
					e.PrevKv = prev
				}
			}
			events[i] = e
		}
	}
	return &pb.WatchResponse{
		Header:          sws.header(r.Revision),
		WatchId:         r.WatchID,
		Events:          events,
		CompactRevision: r.CompactRevision,
		Canceled:        r.CompactRevision != 0,
	}
}

// send sends a response, in fragments when its watch asked for them and
// it is too large.
func (sws *serverWatchStream) send(wr *pb.WatchResponse) bool {
	sws.mu.Lock()
	fragmented := sws.fragment[wr.WatchId]
	sws.mu.Unlock()
	var err error
	if fragmented {
		err = sendFragments(wr, sws.s.cfg.MaxRequestBytes+grpcOverheadBytes, sws.grpc.Send)
	} else {
		err = sws.grpc.Send(wr)
	}
	return err == nil
}

// sendFragments splits a response's events over responses below maxBytes,
// each but the last marked as a fragment, as etcd does.
func sendFragments(wr *pb.WatchResponse, maxBytes int, send func(*pb.WatchResponse) error) error {
	if proto.Size(wr) < maxBytes || len(wr.Events) < 2 {
		return send(wr)
	}
	idx := 0
	for {
		cur := &pb.WatchResponse{
			Header: wr.Header, WatchId: wr.WatchId, Created: wr.Created, Canceled: wr.Canceled,
			CompactRevision: wr.CompactRevision, CancelReason: wr.CancelReason, Fragment: true,
			Events: make([]*mvccpb.Event, 0),
		}
		for _, ev := range wr.Events[idx:] {
			cur.Events = append(cur.Events, ev)
			if len(cur.Events) > 1 && proto.Size(cur) >= maxBytes {
				cur.Events = cur.Events[:len(cur.Events)-1]
				break
			}
			idx++
		}
		if idx == len(wr.Events) {
			cur.Fragment = false
		}
		if err := send(cur); err != nil {
			return err
		}
		if !cur.Fragment {
			return nil
		}
	}
}

// progressInterval adds etcd's jitter (up to a tenth) to the interval.
func progressInterval(d time.Duration) time.Duration {
	return d + time.Duration(rand.Int64N(int64(d)/10+1))
}
