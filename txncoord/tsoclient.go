package txncoord

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/basaltdb/basalt/internal/combine"
)

// TSOServer is the oracle a TSOClient calls: the local TSO, or (on a node
// that does not lead the meta group) a remote one.
type TSOServer interface {
	Allocate(ctx context.Context, n int) (int64, error)
	Current(ctx context.Context) (int64, error)
}

// ErrTSOClientClosed is returned after Close.
var ErrTSOClientClosed = errors.New("txncoord: TSO client closed")

// TSOClient merges its callers' requests: one call to the server is in
// flight at a time, and every request that arrives meanwhile is served by
// the next call (one Allocate for the sum of the counts, one Current for
// all readers). The TSO is on every write's path; batching makes its cost
// per batch, not per request. An uncontended request makes its call in its
// own goroutine (internal/combine).
type TSOClient struct {
	server   TSOServer
	combiner *combine.Combiner[*tsoRequest]
	closed   atomic.Bool
	// seen is the newest revision the server returned: allocated, or
	// reported current.
	seen atomic.Int64
}

type tsoRequest struct {
	ctx  context.Context
	n    int // 0: Current
	skip bool
	rev  int64
	err  error
	done chan struct{}
}

// NewTSOClient returns a client of server.
func NewTSOClient(server TSOServer) *TSOClient {
	c := &TSOClient{server: server}
	c.combiner = combine.New(c.serve)
	return c
}

// Close makes later requests fail; requests already queued are served.
func (c *TSOClient) Close() { c.closed.Store(true) }

// Allocate returns the first of n consecutive new revisions.
func (c *TSOClient) Allocate(ctx context.Context, n int) (int64, error) {
	return c.do(ctx, n)
}

// Current returns the newest revision handed out when the call began or
// later.
func (c *TSOClient) Current(ctx context.Context) (int64, error) {
	return c.do(ctx, 0)
}

// Seen returns the newest revision this client got from the server, by
// Allocate or Current: a cheap lower bound of the current revision, with no
// call.
func (c *TSOClient) Seen() int64 { return c.seen.Load() }

func (c *TSOClient) see(rev int64) {
	for {
		old := c.seen.Load()
		if rev <= old || c.seen.CompareAndSwap(old, rev) {
			return
		}
	}
}

func (c *TSOClient) do(ctx context.Context, n int) (int64, error) {
	if c.closed.Load() {
		return 0, ErrTSOClientClosed
	}
	r := &tsoRequest{ctx: ctx, n: n, done: make(chan struct{})}
	c.combiner.Submit(r)
	select {
	case <-r.done:
		return r.rev, r.err
	case <-ctx.Done():
		// Still answered later; a revision allocated for it stays unused.
		return 0, ctx.Err()
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
		if first, allocErr = c.server.Allocate(ctx, total); allocErr == nil {
			c.see(first + int64(total) - 1)
		}
	}
	if readers > 0 {
		if cur, curErr = c.server.Current(ctx); curErr == nil {
			c.see(cur)
		}
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
