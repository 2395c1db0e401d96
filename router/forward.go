package router

import (
	"context"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/basaltpb"
	"github.com/basaltdb/basalt/shard"
	"github.com/basaltdb/basalt/txncoord"
)

// writeForwarder sends the write transactions this member forwards to a
// shard's leader in batches: a sender per leader takes every write waiting
// when it looks and sends them in one Internal.Write call, without waiting
// for earlier calls to return. Under load one call carries many writes;
// alone, a write goes at once. One call per batch instead of one per write
// keeps forwarding cheap for both members.
type writeForwarder struct {
	peers *Peers
	work  *workers // runs the calls

	stopc chan struct{} // closed when the server stops

	mu      sync.Mutex
	senders map[uint64]chan *forwardedWrite
}

func newWriteForwarder(peers *Peers, work *workers) *writeForwarder {
	return &writeForwarder{peers: peers, work: work, stopc: make(chan struct{})}
}

// stop ends the senders; writes still waiting to be sent fail.
func (f *writeForwarder) stop() { close(f.stopc) }

// maxForwardBatch bounds the writes of one Internal.Write call.
const maxForwardBatch = 256

type forwardedWrite struct {
	txn  []byte
	resp *pb.TxnResponse
	err  error
	done chan struct{}
}

// write runs txn at leader and returns its response, or etcd's gRPC error.
func (f *writeForwarder) write(ctx context.Context, leader uint64, txn *pb.TxnRequest) (*pb.TxnResponse, error) {
	data, err := shard.MarshalTxn(txn)
	if err != nil {
		return nil, err
	}
	w := &forwardedWrite{txn: data, done: make(chan struct{})}
	select {
	case f.senderOf(leader) <- w:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-f.stopc:
		return nil, rpctypes.ErrGRPCStopped
	}
	select {
	case <-w.done:
		return w.resp, w.err
	case <-ctx.Done():
		return nil, ctx.Err() // the write may still happen
	}
}

// senderOf returns the queue of the sender to leader, starting it.
func (f *writeForwarder) senderOf(leader uint64) chan<- *forwardedWrite {
	f.mu.Lock()
	defer f.mu.Unlock()
	if q, ok := f.senders[leader]; ok {
		return q
	}
	if f.senders == nil {
		f.senders = make(map[uint64]chan *forwardedWrite)
	}
	q := make(chan *forwardedWrite, maxForwardBatch)
	f.senders[leader] = q
	go f.sender(leader, q)
	return q
}

// maxForwardCalls bounds the Internal.Write calls in flight to one leader.
// Writes that arrive meanwhile wait and go together in the next call: under
// load, calls carry many writes instead of one or two each.
const maxForwardCalls = 4

// sender batches what waits in q and sends each batch on a worker, at most
// maxForwardCalls at a time, until the server stops.
func (f *writeForwarder) sender(leader uint64, q chan *forwardedWrite) {
	calls := make(chan struct{}, maxForwardCalls)
	for {
		var w *forwardedWrite
		select {
		case w = <-q:
		case <-f.stopc:
			return
		}
		select {
		case calls <- struct{}{}:
		case <-f.stopc:
			w.err = rpctypes.ErrGRPCStopped
			close(w.done)
			return
		}
		batch := []*forwardedWrite{w}
	drain:
		for len(batch) < maxForwardBatch {
			select {
			case w := <-q:
				batch = append(batch, w)
			default:
				break drain
			}
		}
		f.work.do(func() {
			f.send(leader, batch)
			<-calls
		})
	}
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

// Write runs forwarded write transactions here, concurrently on workers, so
// that the sequencer batches them as it batches writes from clients. The
// requests are decoded first, on the call's goroutine: decoding on a new
// goroutine grew its stack, and the copy cost more than the decoding.
func (i *internalServer) Write(ctx context.Context, r *basaltpb.WriteRequest) (*basaltpb.WriteResponse, error) {
	results := make([]*basaltpb.WriteResult, len(r.Txns))
	var wg sync.WaitGroup
	for j, data := range r.Txns {
		txn, err := shard.UnmarshalTxn(data)
		if err != nil {
			results[j] = &basaltpb.WriteResult{Code: uint32(codes.InvalidArgument), Message: err.Error()}
			continue
		}
		wg.Add(1)
		i.s.work.do(func() {
			defer wg.Done()
			results[j] = i.writeOne(ctx, txn)
		})
	}
	wg.Wait()
	return &basaltpb.WriteResponse{Results: results}, nil
}

func (i *internalServer) writeOne(ctx context.Context, txn *pb.TxnRequest) *basaltpb.WriteResult {
	resp, err := i.s.coord.Txn(ctx, txn)
	var data []byte
	if err == nil {
		data, err = proto.Marshal(resp)
	}
	if err != nil {
		st := status.Convert(toGRPCError(ctx, err))
		return &basaltpb.WriteResult{Code: uint32(st.Code()), Message: st.Message()}
	}
	return &basaltpb.WriteResult{TxnResponse: data}
}
