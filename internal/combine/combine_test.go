package combine

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type req struct {
	submitted time.Time
	servedBy  time.Time // start of the batch that served it
	done      chan struct{}
}

// TestCombinerBatches: every request is answered exactly once, by a batch
// that started after it was submitted; batches never overlap; concurrent
// requests share batches.
func TestCombinerBatches(t *testing.T) {
	var inflight, batches atomic.Int32
	var overlap atomic.Bool
	c := New(func(batch []*req) {
		if inflight.Add(1) > 1 {
			overlap.Store(true)
		}
		batches.Add(1)
		start := time.Now()
		time.Sleep(time.Millisecond)
		for _, r := range batch {
			r.servedBy = start
			close(r.done)
		}
		inflight.Add(-1)
	})
	const n = 300
	reqs := make([]*req, n)
	var wg sync.WaitGroup
	for i := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &req{submitted: time.Now(), done: make(chan struct{})}
			reqs[i] = r
			c.Submit(r)
			<-r.done
		}()
	}
	wg.Wait()
	if overlap.Load() {
		t.Fatal("two batches ran at once")
	}
	for _, r := range reqs {
		if r.servedBy.Before(r.submitted) {
			t.Fatal("a request was answered by a batch that started before it was submitted")
		}
	}
	if b := batches.Load(); b >= n {
		t.Fatalf("%d batches for %d concurrent requests: nothing was combined", b, n)
	}
}
