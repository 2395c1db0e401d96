package router

import "time"

// workerIdle is how long a worker waits for another function before it
// ends.
const workerIdle = 10 * time.Second

// workers runs functions on goroutines that outlive them. A function goes
// to an idle worker, or to a new one when none is idle; a worker ends
// once it has idled for workerIdle, or when the pool stops.
//
// A new goroutine per forwarded write or per forwarding call grew its stack
// each time as deep as the write went (through gRPC or the coordinator),
// and copying stacks took 1.4-1.9% of three members' CPU under a
// 100-client put load. A worker grows its stack once.
type workers struct {
	work  chan func()
	stopc chan struct{}
}

func newWorkers() *workers {
	return &workers{work: make(chan func()), stopc: make(chan struct{})}
}

// do runs f on a worker.
func (w *workers) do(f func()) {
	if !w.handOff(f) {
		go w.run(f)
	}
}

// handOff gives f to an idle worker, if there is one.
func (w *workers) handOff(f func()) bool {
	select {
	case w.work <- f:
		return true
	default:
		return false
	}
}

func (w *workers) run(f func()) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		f()
		idle.Reset(workerIdle)
		select {
		case f = <-w.work:
		case <-idle.C:
			return
		case <-w.stopc:
			return
		}
	}
}

// stop ends the idle workers; busy ones end when their function returns.
// Functions given to do afterwards still run.
func (w *workers) stop() { close(w.stopc) }
