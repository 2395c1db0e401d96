package router

import (
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// goroutineID is the id in the first line of the calling goroutine's stack.
func goroutineID() string {
	b := make([]byte, 64)
	return strings.Fields(string(b[:runtime.Stack(b, false)]))[1]
}

func TestWorkersReuseIdleGoroutines(t *testing.T) {
	w := newWorkers()
	defer w.stop()
	ids := make(chan string, 1)
	record := func() { ids <- goroutineID() }
	w.do(record)
	first := <-ids
	for i := range 20 {
		// The worker is idle once it took what it ran back to its loop.
		deadline := time.Now().Add(10 * time.Second)
		for !w.handOff(record) {
			if time.Now().After(deadline) {
				t.Fatalf("run %d: no idle worker after 10s", i+2)
			}
			runtime.Gosched()
		}
		if id := <-ids; id != first {
			t.Fatalf("run %d on goroutine %s, want the worker %s", i+2, id, first)
		}
	}
}

func TestWorkersRunConcurrently(t *testing.T) {
	w := newWorkers()
	defer w.stop()
	const n = 8
	var started, done sync.WaitGroup
	release := make(chan struct{})
	started.Add(n)
	done.Add(n)
	for range n {
		w.do(func() {
			defer done.Done()
			started.Done()
			<-release // every function holds its worker until all started
		})
	}
	started.Wait()
	close(release)
	done.Wait()
}

func TestWorkersRunAfterStop(t *testing.T) {
	w := newWorkers()
	ran := make(chan struct{})
	w.do(func() { close(ran) })
	<-ran
	w.stop()
	ran = make(chan struct{})
	w.do(func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("a function given after stop did not run")
	}
	// goleak (TestMain) checks that the workers ended.
}
