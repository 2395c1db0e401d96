package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// stampedValue prefixes value with the current time, so that a watcher can
// tell how long the event took to arrive.
func stampedValue(value []byte) string {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(value)), uint64(time.Now().UnixNano()))
	return string(append(b, value...))
}

// stampAge returns how old a stamped value is; ok is false when it carries
// no stamp.
func stampAge(v []byte, now time.Time) (time.Duration, bool) {
	if len(v) < 8 {
		return 0, false
	}
	return now.Sub(time.Unix(0, int64(binary.BigEndian.Uint64(v)))), true
}

// deliveryWatchers watch a key (or prefix) on many streams and record how
// long each put took to reach them.
type deliveryWatchers struct {
	cancel   context.CancelFunc
	watchers []clientv3.Watcher
	hists    []*Histogram
	wg       sync.WaitGroup
}

// start opens streams watch streams spread over clis, each with perStream
// watches of key, and returns once every watch is created.
func (d *deliveryWatchers) start(ctx context.Context, clis []*clientv3.Client, key string, streams, perStream int, opts ...clientv3.OpOption) (func() (*Histogram, error), error) {
	ctx, d.cancel = context.WithCancel(ctx)
	opts = append(opts, clientv3.WithCreatedNotify())
	created := make(chan error, streams*perStream)
	for s := range streams {
		w := clientv3.NewWatcher(clis[s%len(clis)])
		d.watchers = append(d.watchers, w)
		for range perStream {
			h := NewHistogram()
			d.hists = append(d.hists, h)
			ch := w.Watch(ctx, key, opts...)
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				first := true
				for resp := range ch {
					if first {
						first = false
						created <- resp.Err()
						continue
					}
					now := time.Now()
					for _, ev := range resp.Events {
						if ev.Type != clientv3.EventTypePut {
							continue
						}
						if age, ok := stampAge(ev.Kv.Value, now); ok {
							h.Record(age)
						}
					}
				}
			}()
		}
	}
	stop := func() (*Histogram, error) {
		d.drain()
		d.cancel()
		for _, w := range d.watchers {
			w.Close()
		}
		d.wg.Wait()
		out := NewHistogram()
		for _, h := range d.hists {
			out.Merge(h)
		}
		return out, nil
	}
	for range streams * perStream {
		select {
		case err := <-created:
			if err != nil {
				stop()
				return nil, fmt.Errorf("bench: create watch: %w", err)
			}
		case <-time.After(time.Minute):
			stop()
			return nil, fmt.Errorf("bench: watches not created within a minute")
		}
	}
	return stop, nil
}

// drain waits until events stop arriving (the last puts' events may still
// be on their way), for at most two seconds.
func (d *deliveryWatchers) drain() {
	count := func() (n int64) {
		for _, h := range d.hists {
			n += h.Count()
		}
		return n
	}
	last := count()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		n := count()
		if n == last {
			return
		}
		last = n
	}
}

// watchWorkload puts stamped values under a prefix that many watchers
// watch; its result is the event delivery latency and events per second.
type watchWorkload struct {
	cfg   WorkloadConfig
	value []byte
	keys  keyPicker
}

const watchPrefix = "bench-watch/"

func (w *watchWorkload) Name() string { return "watch" }
func (w *watchWorkload) Params() map[string]any {
	return map[string]any{"streams": w.cfg.Streams, "watchers-per-stream": w.cfg.WatchersPer, "val-size": w.cfg.ValueSize, "key-space-size": w.cfg.KeySpace}
}
func (w *watchWorkload) Prepare(context.Context, *clientv3.Client) error {
	w.value = randomBytes(w.cfg.ValueSize)
	w.keys.cfg = w.cfg
	return nil
}
func (w *watchWorkload) Start(ctx context.Context, clis []*clientv3.Client) (func() (*Histogram, error), error) {
	d := &deliveryWatchers{}
	return d.start(ctx, clis, watchPrefix, w.cfg.Streams, w.cfg.WatchersPer, clientv3.WithPrefix())
}
func (w *watchWorkload) Primary() bool { return true }
func (w *watchWorkload) Op(ctx context.Context, wk *Worker) error {
	_, err := wk.Cli.Put(ctx, watchPrefix+w.keys.next(wk), stampedValue(w.value))
	return err
}
