package combine

import "sync"

// Combiner runs serve on batches of requests, one batch at a time.
type Combiner[T any] struct {
	serve func(batch []T)

	mu    sync.Mutex
	busy  bool
	queue []T
}

// New returns a combiner that calls serve for each batch. serve must answer
// every request of the batch (through whatever the request carries).
func New[T any](serve func(batch []T)) *Combiner[T] {
	return &Combiner[T]{serve: serve}
}

// Submit queues r. If no batch is being served, the caller serves the batch
// that holds r (in its own goroutine) before Submit returns, and hands what
// queued up meanwhile to a new goroutine; otherwise Submit returns at once
// and the batch after the current one will answer r. Either way the caller
// then waits for r's answer.
//
// A request is never served by a batch that started before it was
// submitted.
func (c *Combiner[T]) Submit(r T) {
	c.mu.Lock()
	c.queue = append(c.queue, r)
	if c.busy {
		c.mu.Unlock()
		return
	}
	c.busy = true
	if c.serveNext() {
		go c.drain()
	}
}

// serveNext serves the queued batch; c.mu is held on entry and released.
// It reports whether more requests queued up meanwhile (busy stays set:
// the caller must drain them).
func (c *Combiner[T]) serveNext() bool {
	batch := c.queue
	c.queue = nil
	c.mu.Unlock()
	c.serve(batch)
	c.mu.Lock()
	if len(c.queue) == 0 {
		c.busy = false
		c.mu.Unlock()
		return false
	}
	c.mu.Unlock()
	return true
}

func (c *Combiner[T]) drain() {
	for {
		c.mu.Lock()
		if !c.serveNext() {
			return
		}
	}
}
