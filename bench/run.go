package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// Worker is one benchmark client: its connection, its random source and a
// count of the requests it started.
type Worker struct {
	ID   int
	Cli  *clientv3.Client
	Rand *rand.Rand
	// N counts the requests this worker started, from 0.
	N int64
}

// Workload is a kind of request mix.
type Workload interface {
	// Name is the workload's name on the command line.
	Name() string
	// Params are the workload's settings, for the report.
	Params() map[string]any
	// Prepare loads what the workload needs; it is not measured.
	Prepare(ctx context.Context, cli *clientv3.Client) error
	// Op performs one measured request.
	Op(ctx context.Context, w *Worker) error
}

// Background is implemented by workloads that also measure something the
// requests cause elsewhere (watch event delivery). Start runs before the
// measured requests and returns a function that stops it and returns what
// it measured.
type Background interface {
	Start(ctx context.Context, clis []*clientv3.Client) (stop func() (*Histogram, error), err error)
	// Primary reports whether the background measurement is the workload's
	// result (watch) or an extra beside the requests' latency (k8s).
	Primary() bool
}

// Connect opens o.Conns clients, each to one of o.Endpoints in turn, as
// etcd's benchmark tool does: a connection's requests all go to one member,
// and the load spreads over the members by connection. (One client given
// all endpoints would send each request to the next member instead, so
// every connection would carry an equal share of its requests to each
// member, in smaller writes.)
func Connect(o Options) ([]*clientv3.Client, error) {
	clis := make([]*clientv3.Client, o.Conns)
	for i := range clis {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:          []string{o.Endpoints[i%len(o.Endpoints)]},
			DialTimeout:        10 * time.Second,
			Logger:             zap.NewNop(),
			MaxCallSendMsgSize: 16 << 20,
			MaxCallRecvMsgSize: 1 << 30,
		})
		if err != nil {
			closeAll(clis[:i])
			return nil, fmt.Errorf("bench: connect to %v: %w", o.Endpoints, err)
		}
		clis[i] = cli
	}
	return clis, nil
}

func closeAll(clis []*clientv3.Client) {
	for _, c := range clis {
		if c != nil {
			c.Close()
		}
	}
}

// Run runs w against o.Endpoints: prepare, warm up, measure.
func Run(ctx context.Context, o Options, w Workload) (*Result, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	clis, err := Connect(o)
	if err != nil {
		return nil, err
	}
	defer closeAll(clis)
	if err := w.Prepare(ctx, clis[0]); err != nil {
		return nil, fmt.Errorf("bench: prepare %s: %w", w.Name(), err)
	}
	if o.Warmup > 0 {
		warm := o
		warm.Total, warm.Duration, warm.Progress = 0, o.Warmup, false
		if _, err := measure(ctx, warm, w, clis, io.Discard); err != nil {
			return nil, err
		}
	}
	var stop func() (*Histogram, error)
	bg, hasBackground := w.(Background)
	if hasBackground {
		if stop, err = bg.Start(ctx, clis); err != nil {
			return nil, fmt.Errorf("bench: start %s: %w", w.Name(), err)
		}
	}
	var progress io.Writer = io.Discard
	if o.Progress {
		progress = os.Stderr
	}
	cpu := startCPUMeter(o.ServerPIDs)
	res, err := measure(ctx, o, w, clis, progress)
	if err != nil {
		return nil, err
	}
	cpu.stop(res)
	if hasBackground {
		h, err := stop()
		if err != nil {
			return nil, err
		}
		if !bg.Primary() {
			res.Extra = map[string]Percentiles{"delivery": h.Percentiles()}
			return res, nil
		}
		// What the background measured (event delivery) is the result; the
		// requests' own latency becomes the extra.
		res.Extra = map[string]Percentiles{"request": res.Latency}
		res.Histogram, res.Latency = h, h.Percentiles()
		res.Throughput = float64(h.Count()) / res.Seconds
	}
	return res, nil
}

// measure runs the requests and records their latencies.
func measure(ctx context.Context, o Options, w Workload, clis []*clientv3.Client, progress io.Writer) (*Result, error) {
	start := time.Now()
	deadline := start.Add(o.Duration)
	var cancel context.CancelFunc
	if o.Total > 0 {
		ctx, cancel = context.WithCancel(ctx)
	} else {
		// clientv3 waits for a connection that never comes (a wrong
		// endpoint, a cluster that is down): requests still waiting this
		// long after the run's end are abandoned, and the run fails.
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(stuckAfter(o.Duration)))
	}
	defer cancel()
	var limiter *rate.Limiter
	if o.Rate > 0 {
		limiter = rate.NewLimiter(rate.Limit(o.Rate), 1)
	}
	var (
		started, done, failed atomic.Int64
		errMu                 sync.Mutex
		errSamples            = map[string]int64{}
		hists                 = make([]*Histogram, o.Clients)
		wg                    sync.WaitGroup
	)
	prog := newProgress(progress, o, start)
	for i := range o.Clients {
		hists[i] = NewHistogram()
		wk := &Worker{ID: i, Cli: clis[i%len(clis)], Rand: rand.New(rand.NewPCG(o.Seed, uint64(i)))}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if o.Total > 0 {
					if started.Add(1) > int64(o.Total) {
						return
					}
				} else if time.Now().After(deadline) {
					return
				}
				if limiter != nil && limiter.Wait(ctx) != nil {
					return
				}
				t0 := time.Now()
				err := w.Op(ctx, wk)
				lat := time.Since(t0)
				wk.N++
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					failed.Add(1)
					errMu.Lock()
					if len(errSamples) < 20 {
						errSamples[err.Error()]++
					} else if _, ok := errSamples[err.Error()]; ok {
						errSamples[err.Error()]++
					}
					errMu.Unlock()
				} else {
					hists[wk.ID].Record(lat)
				}
				done.Add(1)
			}
		}()
	}
	stopProgress := prog.run(&done, &failed)
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	if o.Total == 0 && ctx.Err() == context.DeadlineExceeded {
		return nil, fmt.Errorf("bench: requests to %v still unanswered %v after the run's end (%d answered)", o.Endpoints, stuckAfter(o.Duration), done.Load())
	}

	h := NewHistogram()
	for _, x := range hists {
		h.Merge(x)
	}
	res := &Result{
		Workload:     w.Name(),
		Params:       w.Params(),
		Clients:      o.Clients,
		Conns:        o.Conns,
		Rate:         o.Rate,
		Requests:     done.Load(),
		Errors:       failed.Load(),
		ErrorSamples: errSamples,
		Seconds:      elapsed.Seconds(),
		Latency:      h.Percentiles(),
		Histogram:    h,
	}
	res.Throughput = float64(res.Requests-res.Errors) / res.Seconds
	if res.Requests > 0 && res.Errors == res.Requests {
		return res, fmt.Errorf("bench: every request failed, e.g. %s", topError(errSamples))
	}
	return res, nil
}

// stuckAfter is how long after the end of a run that lasted d its
// requests may still wait for their answers: as long as the run, and at
// least 5 s.
func stuckAfter(d time.Duration) time.Duration { return max(d, 5*time.Second) }

func topError(samples map[string]int64) string {
	keys := make([]string, 0, len(samples))
	for k := range samples {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return samples[keys[i]] > samples[keys[j]] })
	if len(keys) == 0 {
		return "(none)"
	}
	return keys[0]
}
