package difftest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/internal/testnode"
)

// watchSide is one server's watch stream with the responses it delivers.
type watchSide struct {
	name   string
	stream pb.Watch_WatchClient
	resps  chan *pb.WatchResponse
}

func openWatch(t *testing.T, name string, conn *grpc.ClientConn) *watchSide {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := &watchSide{name: name, stream: stream, resps: make(chan *pb.WatchResponse, 10000)}
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				close(s.resps)
				return
			}
			s.resps <- r
		}
	}()
	return s
}

// collect gathers responses until none arrives for quiet, or until n have
// arrived (n < 0: until quiet).
func (s *watchSide) collect(n int, quiet time.Duration) []*pb.WatchResponse {
	var out []*pb.WatchResponse
	for n < 0 || len(out) < n {
		select {
		case r, ok := <-s.resps:
			if !ok {
				return out
			}
			out = append(out, r)
		case <-time.After(quiet):
			return out
		}
	}
	// A little longer for responses etcd did not send.
	select {
	case r, ok := <-s.resps:
		if ok {
			out = append(out, r)
		}
	case <-time.After(50 * time.Millisecond):
	}
	return out
}

// byWatch renders responses grouped by watch id (the order between watches
// is not specified; within one it is), without cluster and member ids.
func byWatch(resps []*pb.WatchResponse) string {
	groups := map[int64][]string{}
	for _, r := range resps {
		r = proto.Clone(r).(*pb.WatchResponse)
		if r.Header != nil {
			r.Header.ClusterId, r.Header.MemberId, r.Header.RaftTerm = 0, 0, 0
		}
		groups[r.WatchId] = append(groups[r.WatchId], prototext.MarshalOptions{}.Format(r))
	}
	ids := make([]int64, 0, len(groups))
	for id := range groups {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var b strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&b, "watch %d:\n", id)
		for _, r := range groups[id] {
			fmt.Fprintf(&b, "  {%s}\n", r)
		}
	}
	return b.String()
}

// watchPair drives the same watch requests and writes on etcd and Basalt.
type watchPair struct {
	*Pair
	t            *testing.T
	etcd, basalt *watchSide
	step         int
}

func newWatchPair(t *testing.T, etcdFlags ...string) *watchPair {
	etcdAddr := StartEtcd(t, etcdFlags...)
	n := testnode.Start(t)
	p := NewPair(t, Dial(t, etcdAddr), Dial(t, n.ClientAddrs()[0]))
	return &watchPair{
		Pair: p, t: t,
		etcd:   openWatch(t, "etcd", p.Etcd.conn),
		basalt: openWatch(t, "basalt", p.Basalt.conn),
	}
}

// send sends a watch request on both streams and compares what comes back
// (created, canceled, progress, events of catch-up).
func (w *watchPair) send(req *pb.WatchRequest) {
	w.t.Helper()
	w.step++
	for _, s := range []*watchSide{w.etcd, w.basalt} {
		if err := s.stream.Send(proto.Clone(req).(*pb.WatchRequest)); err != nil {
			w.t.Fatalf("%s: send: %v", s.name, err)
		}
	}
	w.compare(fmt.Sprintf("step %d: %s", w.step, prototext.Format(req)))
}

// write runs a KV call on both servers and compares the watch responses it
// causes.
func (w *watchPair) write(c Call) {
	w.t.Helper()
	w.step++
	w.Run(c)
	w.compare(fmt.Sprintf("step %d: %s", w.step, c.Name))
}

func (w *watchPair) compare(what string) {
	w.t.Helper()
	// etcd catches up watchers every 100 ms: wait for it to go quiet.
	got := w.etcd.collect(-1, 400*time.Millisecond)
	mine := w.basalt.collect(len(got), 2*time.Second)
	if a, b := byWatch(got), byWatch(mine); a != b {
		w.t.Fatalf("%s\netcd:\n%s\nbasalt:\n%s", what, a, b)
	}
}

func create(c *pb.WatchCreateRequest) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: c}}
}

func cancelReq(id int64) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: id}}}
}

func progressReq() *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}
}

// TestWatchMatchesEtcd sends the same watch requests and writes to Basalt
// and a real etcd 3.7.3 and requires the same responses per watch, in the
// same order: created and canceled responses, events grouped per revision
// (atomic), catch-up from a past revision, prev_kv, filters, client-chosen
// and duplicate ids, compaction, progress requests, fragments, and bad
// requests.
func TestWatchMatchesEtcd(t *testing.T) {
	w := newWatchPair(t)
	b := func(s string) []byte { return []byte(s) }
	put := func(k, v string) Call { return Put(&pb.PutRequest{Key: b(k), Value: b(v)}) }
	del := func(k, end string) Call {
		d := &pb.DeleteRangeRequest{Key: b(k)}
		if end != "" {
			d.RangeEnd = b(end)
		}
		return Delete(d)
	}

	// History before any watch.
	w.write(put("a", "1"))  // 2
	w.write(put("b1", "1")) // 3
	w.write(put("a", "2"))  // 4
	w.write(del("b1", ""))  // 5

	w.send(create(&pb.WatchCreateRequest{Key: b("a")}))                                                                                                // 0: a from now
	w.send(create(&pb.WatchCreateRequest{Key: b("b"), RangeEnd: b("c"), PrevKv: true}))                                                                // 1: prefix b, prev_kv
	w.send(create(&pb.WatchCreateRequest{Key: b("a"), StartRevision: 2, PrevKv: true}))                                                                // 2: a from 2 (catch-up)
	w.send(create(&pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: 1}))                                                      // 3: everything from 1
	w.send(create(&pb.WatchCreateRequest{Key: b("c"), RangeEnd: b("e"), Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}}))    // 4: deletes only
	w.send(create(&pb.WatchCreateRequest{Key: b("c"), RangeEnd: b("e"), Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NODELETE}})) // 5: puts only
	w.send(create(&pb.WatchCreateRequest{Key: b("f"), StartRevision: 9}))                                                                              // 6: a future start
	w.send(create(&pb.WatchCreateRequest{Key: b("a"), WatchId: 100}))                                                                                  // 100: client-chosen id
	w.send(create(&pb.WatchCreateRequest{Key: b("a"), WatchId: 100}))                                                                                  // duplicate id
	w.send(create(&pb.WatchCreateRequest{Key: b("z"), RangeEnd: b("a")}))                                                                              // range end before key
	w.send(create(&pb.WatchCreateRequest{Key: b("z"), RangeEnd: b("z")}))                                                                              // empty range
	w.send(create(&pb.WatchCreateRequest{Key: b("a"), StartRevision: -1}))                                                                             // negative start
	w.send(create(&pb.WatchCreateRequest{Key: nil, RangeEnd: b("b")}))                                                                                 // empty key means "\x00"

	w.write(put("a", "3"))                                                                                        // 6
	w.write(put("b2", "x"))                                                                                       // 7
	w.write(put("b2", "y"))                                                                                       // 8
	w.write(put("c1", "p"))                                                                                       // 9
	w.write(del("c", "d"))                                                                                        // 10
	w.write(put("f", "now"))                                                                                      // 11: reaches the future watch
	w.write(Txn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("a", "4"), opPut("b3", "t"), opDelete("b2", "")}})) // 12: one response per watch
	w.write(del("nothing", ""))                                                                                   // no revision, no events

	w.send(progressReq())
	w.send(cancelReq(3))
	w.send(cancelReq(3))   // already canceled: no response
	w.send(cancelReq(777)) // unknown: no response
	w.write(put("a", "5")) // 13
	w.send(progressReq())

	// Compaction: a watch below the compacted revision is canceled with it;
	// one from exactly the compacted revision still gets its events.
	w.write(Compact(12, true))
	w.send(create(&pb.WatchCreateRequest{Key: b("a"), StartRevision: 11}))
	w.send(create(&pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: 12}))
	w.send(progressReq()) // not every watch is synced (one was compacted): no response

	// Fragments: a catch-up of three large values exceeds a response.
	big := strings.Repeat("v", 800*1024)
	w.write(put("big1", big)) // 14
	w.write(put("big2", big)) // 15
	w.write(put("big3", big)) // 16
	w.send(create(&pb.WatchCreateRequest{Key: b("big"), RangeEnd: b("bih"), StartRevision: 14, Fragment: true}))
	w.write(put("a", "6"))

	// A seeded random run: writes while several watches of different kinds
	// are open.
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("random watch sequence seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 7))
	keys := []string{"a", "b1", "b2", "c1", "d", "k", "k/1", "k/2"}
	w.send(create(&pb.WatchCreateRequest{Key: b("k"), RangeEnd: b("l"), PrevKv: true}))
	w.send(create(&pb.WatchCreateRequest{Key: b("d")}))
	for range 40 {
		k := keys[r.IntN(len(keys))]
		switch r.IntN(4) {
		case 0:
			w.write(del(k, ""))
		case 1:
			w.write(Txn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut(k, fmt.Sprint(r.IntN(100))), opPut(k+"x", "t")}}))
		default:
			w.write(put(k, fmt.Sprint(r.IntN(100))))
		}
	}
	w.send(create(&pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: w.Rev - 20, PrevKv: true}))
	w.send(progressReq())
	w.Fail()
}
