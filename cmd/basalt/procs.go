package main

import (
	"context"
	"runtime"
	"time"

	"go.uber.org/zap"
)

// The node runs with extraProcs more Ps than Go's default while it is
// busy: then the Raft log's fdatasync (about a thousand a second under
// load) and socket writes block threads with their Ps while the other Ps
// are busy, and Go's monitor thread takes the blocked Ps, hands them to
// new threads, and polls every 20 µs: a tenth of a core on two cores.
// With spare Ps a blocked one is rarely needed, and the monitor rests.
// (The Raft log's syncs now keep their Ps, placement/logsync_linux.go: the
// spare Ps run the other goroutines meanwhile.)
// With a single client the spare Ps only add threads that spin looking
// for work, and each request is slower; so the node adds them only while
// more than one request is in flight.
//
// Measured on two cores (docs/ARCHITECTURE.md, runtime settings): one
// spare P gave about half the gain of two; four or six spare gave no more
// than two.
const extraProcs = 2

const (
	// procsSampleEvery is how often the requests in flight are counted.
	procsSampleEvery = 20 * time.Millisecond
	// procsWindow is how many samples are averaged for one decision.
	procsWindow = 5
	// busyInFlight is the mean of requests in flight from which the node
	// is busy: more than one client waits on it at a time.
	busyInFlight = 2
	// quietWindows is how many windows in a row below busyInFlight end
	// the spare Ps, so that a pause in the load does not toggle them.
	quietWindows = 10
)

// procsTuner decides, from the mean number of requests in flight over
// each window, when the spare Ps are added and when they end.
type procsTuner struct {
	raised bool
	quiet  int // windows in a row below busyInFlight while raised
}

// procsChange is a procsTuner's decision.
type procsChange int

const (
	procsKeep  procsChange = iota
	procsRaise             // add extraProcs to Go's default
	procsLower             // back to Go's default
)

// observe takes one window's mean of requests in flight.
func (t *procsTuner) observe(mean float64) procsChange {
	busy := mean >= busyInFlight
	switch {
	case !t.raised && busy:
		t.raised, t.quiet = true, 0
		return procsRaise
	case t.raised && busy:
		t.quiet = 0
	case t.raised:
		t.quiet++
		if t.quiet >= quietWindows {
			t.raised = false
			return procsLower
		}
	}
	return procsKeep
}

// tuneProcs adds the spare Ps while the node is busy (inFlight returns
// the requests it serves now) and leaves Go's default otherwise, until ctx
// ends. Call it only when the environment does not set GOMAXPROCS: an
// operator's setting is kept.
func tuneProcs(ctx context.Context, inFlight func() int64, lg *zap.Logger) {
	var (
		t     procsTuner
		sum   int64
		count int
	)
	tick := time.NewTicker(procsSampleEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if t.raised {
				runtime.SetDefaultGOMAXPROCS()
			}
			return
		case <-tick.C:
		}
		sum += inFlight()
		if count++; count < procsWindow {
			continue
		}
		mean := float64(sum) / float64(count)
		sum, count = 0, 0
		switch t.observe(mean) {
		case procsRaise:
			procs := runtime.GOMAXPROCS(0) + extraProcs
			runtime.GOMAXPROCS(procs)
			lg.Info("busy: raised max-cpu-set", zap.Int("max-cpu-set", procs), zap.Float64("requests-in-flight", mean))
		case procsLower:
			// Go's default again, with its automatic updates (cgroup
			// quotas, affinity), which a GOMAXPROCS call turns off.
			runtime.SetDefaultGOMAXPROCS()
			lg.Info("idle: restored max-cpu-set", zap.Int("max-cpu-set", runtime.GOMAXPROCS(0)), zap.Float64("requests-in-flight", mean))
		}
	}
}
