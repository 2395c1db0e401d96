package router

import (
	"context"
	"sync"
	"sync/atomic"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/internal/combine"
	"github.com/basaltdb/basalt/proto/basaltpb"
	"github.com/basaltdb/basalt/txncoord"
)

// forwardLanes is how many batches of forwarded writes may be in flight to
// one leader at once.
const forwardLanes = 4

// writeForwarder sends the write transactions this member forwards to a
// shard's leader in batches: every write that arrives while a lane's call
// is in flight goes into that lane's next Internal.Write call. One call per
// batch instead of one per write keeps forwarding cheap for both members.
type writeForwarder struct {
	peers *Peers

	mu      sync.Mutex
	leaders map[uint64]*leaderLanes
}

type leaderLanes struct {
	next  atomic.Uint32
	lanes [forwardLanes]*combine.Combiner[*forwardedWrite]
}

type forwardedWrite struct {
	txn  []byte
	resp *pb.TxnResponse
	err  error
	done chan struct{}
}

// write runs txn at leader and returns its response, or etcd's gRPC error.
func (f *writeForwarder) write(ctx context.Context, leader uint64, txn *pb.TxnRequest) (*pb.TxnResponse, error) {
	data, err := proto.Marshal(txn)
	if err != nil {
		return nil, err
	}
	w := &forwardedWrite{txn: data, done: make(chan struct{})}
	l := f.lanesOf(leader)
	l.lanes[l.next.Add(1)%forwardLanes].Submit(w)
	select {
	case <-w.done:
		return w.resp, w.err
	case <-ctx.Done():
		return nil, ctx.Err() // the write may still happen
	}
}

func (f *writeForwarder) lanesOf(leader uint64) *leaderLanes {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.leaders[leader]; ok {
		return l
	}
	if f.leaders == nil {
		f.leaders = make(map[uint64]*leaderLanes)
	}
	l := &leaderLanes{}
	for i := range l.lanes {
		l.lanes[i] = combine.New(func(batch []*forwardedWrite) { f.send(leader, batch) })
	}
	f.leaders[leader] = l
	return l
}

// send makes one Internal.Write call for a batch, bounded by RetryTimeout
// (a write whose client gives up earlier stops waiting for it).
func (f *writeForwarder) send(leader uint64, batch []*forwardedWrite) {
	finish := func(err error) {
		for _, w := range batch {
			w.err = err
			close(w.done)
		}
	}
	peer, err := f.peers.Internal(leader)
	if err != nil {
		finish(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), txncoord.RetryTimeout)
	defer cancel()
	req := &basaltpb.WriteRequest{Txns: make([][]byte, len(batch))}
	for i, w := range batch {
		req.Txns[i] = w.txn
	}
	resp, err := peer.Write(ctx, req)
	if err == nil && len(resp.Results) != len(batch) {
		err = status.Errorf(codes.Internal, "basalt: %d results for %d forwarded writes", len(resp.Results), len(batch))
	}
	if err != nil {
		finish(err)
		return
	}
	for i, w := range batch {
		r := resp.Results[i]
		if r.Code != uint32(codes.OK) {
			w.err = status.Error(codes.Code(r.Code), r.Message)
		} else {
			w.resp = &pb.TxnResponse{}
			w.err = proto.Unmarshal(r.TxnResponse, w.resp)
		}
		close(w.done)
	}
}

// Write runs forwarded write transactions here, concurrently, so that the
// sequencer batches them as it batches writes from clients.
func (i *internalServer) Write(ctx context.Context, r *basaltpb.WriteRequest) (*basaltpb.WriteResponse, error) {
	results := make([]*basaltpb.WriteResult, len(r.Txns))
	var wg sync.WaitGroup
	for j, data := range r.Txns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[j] = i.writeOne(ctx, data)
		}()
	}
	wg.Wait()
	return &basaltpb.WriteResponse{Results: results}, nil
}

func (i *internalServer) writeOne(ctx context.Context, data []byte) *basaltpb.WriteResult {
	var txn pb.TxnRequest
	if err := proto.Unmarshal(data, &txn); err != nil {
		return &basaltpb.WriteResult{Code: uint32(codes.InvalidArgument), Message: err.Error()}
	}
	resp, err := i.s.coord.Txn(ctx, &txn)
	if err == nil {
		data, err = proto.Marshal(resp)
	}
	if err != nil {
		st := status.Convert(toGRPCError(ctx, err))
		return &basaltpb.WriteResult{Code: uint32(st.Code()), Message: st.Message()}
	}
	return &basaltpb.WriteResult{TxnResponse: data}
}
