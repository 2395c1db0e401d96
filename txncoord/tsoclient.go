package txncoord

import (
	"context"
	"errors"
	"sync"
)

// TSOServer is the oracle a TSOClient calls: the local TSO, or (on a node
// that does not lead the meta group) a remote one.
type TSOServer interface {
	Allocate(ctx context.Context, n int) (int64, error)
	Current(ctx context.Context) (int64, error)
}

// ErrTSOClientClosed is returned after Close.
var ErrTSOClientClosed = errors.New("txncoord: TSO client closed")

// TSOClient merges the TSO requests of its callers: one call to the server
// is in flight at a time, and every request that arrives meanwhile is served
// by the next call (one Allocate for the sum of the counts, one Current for
// all readers). The TSO is on every write's path; batching makes its cost
// per batch, not per request.
type TSOClient struct {
	server TSOServer
	reqc   chan *tsoRequest
	stopc  chan struct{}
	wg     sync.WaitGroup
}

type tsoRequest struct {
	ctx  context.Context
	n    int // 0: Current
	skip bool
	rev  int64
	err  error
	done chan struct{}
}

// NewTSOClient starts a client of server.
func NewTSOClient(server TSOServer) *TSOClient {
	c := &TSOClient{server: server, reqc: make(chan *tsoRequest, 10000), stopc: make(chan struct{})}
	c.wg.Add(1)
	go c.run()
	return c
}

// Close fails waiting requests and stops the client.
func (c *TSOClient) Close() {
	close(c.stopc)
	c.wg.Wait()
	for {
		select {
		case r := <-c.reqc:
			r.err = ErrTSOClientClosed
			close(r.done)
		default:
			return
		}
	}
}

// Allocate returns the first of n consecutive new revisions.
func (c *TSOClient) Allocate(ctx context.Context, n int) (int64, error) {
	return c.do(ctx, n)
}

// Current returns the newest revision handed out when the call began or
// later.
func (c *TSOClient) Current(ctx context.Context) (int64, error) {
	return c.do(ctx, 0)
}

func (c *TSOClient) do(ctx context.Context, n int) (int64, error) {
	r := &tsoRequest{ctx: ctx, n: n, done: make(chan struct{})}
	select {
	case c.reqc <- r:
	case <-c.stopc:
		return 0, ErrTSOClientClosed
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case <-r.done:
		return r.rev, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-c.stopc:
		// Close answers what it finds queued; a request queued after that
		// is answered here.
		select {
		case <-r.done:
			return r.rev, r.err
		default:
			return 0, ErrTSOClientClosed
		}
	}
}

func (c *TSOClient) run() {
	defer c.wg.Done()
	var batch []*tsoRequest
	for {
		batch = batch[:0]
		select {
		case r := <-c.reqc:
			batch = append(batch, r)
		case <-c.stopc:
			return
		}
	drain:
		for {
			select {
			case r := <-c.reqc:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		c.serve(batch)
	}
}

// serve answers one batch with at most one Allocate and one Current call.
func (c *TSOClient) serve(batch []*tsoRequest) {
	total, readers := 0, 0
	var ctx context.Context
	for _, r := range batch {
		if r.ctx.Err() != nil {
			r.skip = true
			continue
		}
		if ctx == nil {
			ctx = r.ctx // a live caller's deadline bounds the call
		}
		if r.n > 0 {
			total += r.n
		} else {
			readers++
		}
	}
	if ctx == nil {
		for _, r := range batch {
			r.err = r.ctx.Err()
			close(r.done)
		}
		return
	}
	var first, cur int64
	var allocErr, curErr error
	if total > 0 {
		first, allocErr = c.server.Allocate(ctx, total)
	}
	if readers > 0 {
		cur, curErr = c.server.Current(ctx)
	}
	for _, r := range batch {
		switch {
		case r.skip:
			r.err = r.ctx.Err()
		case r.n > 0:
			// Revisions of a caller that gave up are left unused.
			r.rev, r.err = first, allocErr
			first += int64(r.n)
		default:
			r.rev, r.err = cur, curErr
		}
		close(r.done)
	}
}
