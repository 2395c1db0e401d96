package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// WorkloadConfig holds the settings of every workload; each uses its own.
type WorkloadConfig struct {
	KeySize        int    // bytes per key (put, txn-put, range)
	ValueSize      int    // bytes per value
	KeySpace       int    // distinct keys written
	SequentialKeys bool   // write keys in order instead of at random
	Consistency    string // range: "l" (linearizable) or "s" (serializable)
	Limit          int64  // range: limit
	Prefix         bool   // range: read a prefix of PrefixKeys keys
	PrefixKeys     int    // range: keys under the prefix
	KeysOnly       bool   // range
	CountOnly      bool   // range
	TxnOps         int    // txn-put: puts per transaction
	// TxnShards, when above 1, spreads each txn-put transaction over that
	// many equal parts of the key space (the shards of compare --shards
	// TxnShards): put i goes to part i mod TxnShards.
	TxnShards   int
	ReadRatio   float64 // txn-mixed: share of reads
	Streams     int     // watch: watch streams
	WatchersPer int     // watch: watchers per stream
	Leases      int     // lease-keepalive: leases kept alive
	Objects     int     // k8s: objects created before the run
	PageSize    int64   // k8s: list page size
	Watchers    int     // k8s: watchers of the object prefix
}

// DefaultWorkloadConfig has the defaults of etcd's benchmark tool where it
// has them.
func DefaultWorkloadConfig() WorkloadConfig {
	return WorkloadConfig{
		KeySize: 8, ValueSize: 8, KeySpace: 1, Consistency: "l", PrefixKeys: 100,
		TxnOps: 1, ReadRatio: 0.5, Streams: 10, WatchersPer: 10, Leases: 100,
		Objects: 1000, PageSize: 500, Watchers: 10,
	}
}

// Workloads lists the workload names.
var Workloads = []string{"put", "range", "txn-put", "txn-mixed", "watch", "lease-keepalive", "k8s"}

// NewWorkload returns the named workload.
func NewWorkload(name string, c WorkloadConfig) (Workload, error) {
	if c.KeySize < 1 || c.ValueSize < 0 || c.KeySpace < 1 {
		return nil, fmt.Errorf("bench: --key-size and --key-space-size must be positive, --val-size not negative")
	}
	switch name {
	case "put":
		return &putWorkload{cfg: c, value: randomBytes(c.ValueSize)}, nil
	case "range":
		if c.Consistency != "l" && c.Consistency != "s" {
			return nil, fmt.Errorf("bench: --consistency must be l or s, not %q", c.Consistency)
		}
		return &rangeWorkload{cfg: c}, nil
	case "txn-put":
		if c.TxnOps < 1 || c.TxnOps > c.KeySpace {
			return nil, fmt.Errorf("bench: --txn-ops must be between 1 and --key-space-size")
		}
		return &txnPutWorkload{cfg: c, value: randomBytes(c.ValueSize)}, nil
	case "txn-mixed":
		if c.ReadRatio < 0 || c.ReadRatio > 1 {
			return nil, fmt.Errorf("bench: --rw-ratio must be between 0 and 1")
		}
		return &mixedWorkload{cfg: c, value: randomBytes(c.ValueSize)}, nil
	case "watch":
		if c.Streams < 1 || c.WatchersPer < 1 {
			return nil, fmt.Errorf("bench: --streams and --watchers-per-stream must be positive")
		}
		return &watchWorkload{cfg: c}, nil
	case "lease-keepalive":
		if c.Leases < 1 {
			return nil, fmt.Errorf("bench: --leases must be positive")
		}
		return &leaseWorkload{cfg: c}, nil
	case "k8s":
		if c.Objects < 1 || c.PageSize < 1 {
			return nil, fmt.Errorf("bench: --objects and --page-size must be positive")
		}
		return &k8sWorkload{cfg: c, value: randomBytes(max(c.ValueSize, 1))}, nil
	}
	return nil, fmt.Errorf("bench: unknown workload %q (one of %v)", name, Workloads)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(42, 42))
	for i := range b {
		b[i] = byte('a' + r.IntN(26))
	}
	return b
}

// makeKey encodes n into a key of size bytes, as etcd's benchmark does
// (a varint at the front of a zeroed buffer).
func makeKey(size int, n int64) string {
	k := make([]byte, max(size, binary.MaxVarintLen64))
	binary.PutVarint(k, n)
	return string(k[:size])
}

// keyPicker chooses the keys writes go to.
type keyPicker struct {
	cfg WorkloadConfig
	seq atomic.Int64
}

func (p *keyPicker) next(w *Worker) string {
	if p.cfg.SequentialKeys {
		return makeKey(p.cfg.KeySize, (p.seq.Add(1)-1)%int64(p.cfg.KeySpace))
	}
	return makeKey(p.cfg.KeySize, w.Rand.Int64N(int64(p.cfg.KeySpace)))
}

type putWorkload struct {
	cfg   WorkloadConfig
	keys  keyPicker
	value []byte
}

func (p *putWorkload) Name() string { return "put" }
func (p *putWorkload) Params() map[string]any {
	return map[string]any{"key-size": p.cfg.KeySize, "val-size": p.cfg.ValueSize, "key-space-size": p.cfg.KeySpace, "sequential-keys": p.cfg.SequentialKeys}
}
func (p *putWorkload) Prepare(context.Context, *clientv3.Client) error {
	p.keys.cfg = p.cfg
	return nil
}
func (p *putWorkload) Op(ctx context.Context, w *Worker) error {
	_, err := w.Cli.Put(ctx, p.keys.next(w), string(p.value))
	return err
}

type rangeWorkload struct {
	cfg  WorkloadConfig
	key  string
	opts []clientv3.OpOption
}

func (r *rangeWorkload) Name() string { return "range" }
func (r *rangeWorkload) Params() map[string]any {
	return map[string]any{"consistency": r.cfg.Consistency, "limit": r.cfg.Limit, "prefix": r.cfg.Prefix, "keys-only": r.cfg.KeysOnly, "count-only": r.cfg.CountOnly, "val-size": r.cfg.ValueSize}
}

// Prepare writes the key read (or PrefixKeys keys under the prefix).
func (r *rangeWorkload) Prepare(ctx context.Context, cli *clientv3.Client) error {
	value := string(randomBytes(r.cfg.ValueSize))
	r.key = "bench-range"
	n := 1
	if r.cfg.Prefix {
		r.key = "bench-range/"
		n = r.cfg.PrefixKeys
		r.opts = append(r.opts, clientv3.WithPrefix())
	}
	for i := range n {
		k := r.key
		if r.cfg.Prefix {
			k = fmt.Sprintf("%s%06d", r.key, i)
		}
		if _, err := cli.Put(ctx, k, value); err != nil {
			return err
		}
	}
	if r.cfg.Consistency == "s" {
		r.opts = append(r.opts, clientv3.WithSerializable())
	}
	if r.cfg.Limit > 0 {
		r.opts = append(r.opts, clientv3.WithLimit(r.cfg.Limit))
	}
	if r.cfg.KeysOnly {
		r.opts = append(r.opts, clientv3.WithKeysOnly())
	}
	if r.cfg.CountOnly {
		r.opts = append(r.opts, clientv3.WithCountOnly())
	}
	return nil
}
func (r *rangeWorkload) Op(ctx context.Context, w *Worker) error {
	_, err := w.Cli.Get(ctx, r.key, r.opts...)
	return err
}

type txnPutWorkload struct {
	cfg   WorkloadConfig
	value []byte
}

func (t *txnPutWorkload) Name() string { return "txn-put" }
func (t *txnPutWorkload) Params() map[string]any {
	return map[string]any{"txn-ops": t.cfg.TxnOps, "txn-shards": t.cfg.TxnShards, "key-size": t.cfg.KeySize, "val-size": t.cfg.ValueSize, "key-space-size": t.cfg.KeySpace}
}
func (t *txnPutWorkload) Prepare(context.Context, *clientv3.Client) error { return nil }

// Op puts TxnOps distinct random keys in one transaction.
func (t *txnPutWorkload) Op(ctx context.Context, w *Worker) error {
	ops := make([]clientv3.Op, 0, t.cfg.TxnOps)
	seen := make(map[int64]bool, t.cfg.TxnOps)
	for len(ops) < t.cfg.TxnOps {
		n := w.Rand.Int64N(int64(t.cfg.KeySpace))
		if t.cfg.TxnShards > 1 {
			n = keyInPart(w.Rand, int64(t.cfg.KeySpace), len(ops)%t.cfg.TxnShards, t.cfg.TxnShards)
		}
		if seen[n] {
			continue
		}
		seen[n] = true
		ops = append(ops, clientv3.OpPut(makeKey(t.cfg.KeySize, n), string(t.value)))
	}
	_, err := w.Cli.Txn(ctx).Then(ops...).Commit()
	return err
}

type mixedWorkload struct {
	cfg   WorkloadConfig
	value []byte
}

func (m *mixedWorkload) Name() string { return "txn-mixed" }
func (m *mixedWorkload) Params() map[string]any {
	return map[string]any{"rw-ratio": m.cfg.ReadRatio, "key-size": m.cfg.KeySize, "val-size": m.cfg.ValueSize, "key-space-size": m.cfg.KeySpace}
}
func (m *mixedWorkload) Prepare(ctx context.Context, cli *clientv3.Client) error {
	for n := range min(m.cfg.KeySpace, 1000) {
		if _, err := cli.Put(ctx, makeKey(m.cfg.KeySize, int64(n)), string(m.value)); err != nil {
			return err
		}
	}
	return nil
}

// Op reads (a linearizable get) with probability ReadRatio, else writes.
func (m *mixedWorkload) Op(ctx context.Context, w *Worker) error {
	key := makeKey(m.cfg.KeySize, w.Rand.Int64N(int64(m.cfg.KeySpace)))
	if w.Rand.Float64() < m.cfg.ReadRatio {
		_, err := w.Cli.Txn(ctx).Then(clientv3.OpGet(key)).Commit()
		return err
	}
	_, err := w.Cli.Txn(ctx).Then(clientv3.OpPut(key, string(m.value))).Commit()
	return err
}

type leaseWorkload struct {
	cfg    WorkloadConfig
	leases []clientv3.LeaseID
}

func (l *leaseWorkload) Name() string           { return "lease-keepalive" }
func (l *leaseWorkload) Params() map[string]any { return map[string]any{"leases": l.cfg.Leases} }

// Prepare grants the leases kept alive.
func (l *leaseWorkload) Prepare(ctx context.Context, cli *clientv3.Client) error {
	for range l.cfg.Leases {
		resp, err := cli.Grant(ctx, 600)
		if err != nil {
			return err
		}
		l.leases = append(l.leases, resp.ID)
	}
	return nil
}

func (l *leaseWorkload) Op(ctx context.Context, w *Worker) error {
	_, err := w.Cli.KeepAliveOnce(ctx, l.leases[w.Rand.IntN(len(l.leases))])
	return err
}

// k8sWorkload is what the Kubernetes API server does to etcd: objects
// updated through compare-on-mod-revision transactions, created through
// compare-on-create-revision, listed in pages at one revision, and watched
// with previous values.
type k8sWorkload struct {
	cfg     WorkloadConfig
	value   []byte
	created atomic.Int64
	watch   *deliveryWatchers
}

const k8sPrefix = "/registry/pods/default/"

func (k *k8sWorkload) Name() string { return "k8s" }
func (k *k8sWorkload) Params() map[string]any {
	return map[string]any{"objects": k.cfg.Objects, "page-size": k.cfg.PageSize, "watchers": k.cfg.Watchers, "val-size": len(k.value)}
}

func k8sName(n int64) string { return fmt.Sprintf("%spod-%07d", k8sPrefix, n) }

func (k *k8sWorkload) Prepare(ctx context.Context, cli *clientv3.Client) error {
	for n := range k.cfg.Objects {
		if _, err := cli.Put(ctx, k8sName(int64(n)), string(k.value)); err != nil {
			return err
		}
	}
	k.created.Store(int64(k.cfg.Objects))
	return nil
}

// Start watches the objects with previous values, as informers do.
func (k *k8sWorkload) Start(ctx context.Context, clis []*clientv3.Client) (func() (*Histogram, error), error) {
	k.watch = &deliveryWatchers{}
	return k.watch.start(ctx, clis, k8sPrefix, 1, k.cfg.Watchers, clientv3.WithPrefix(), clientv3.WithPrevKV())
}

// Primary reports that the requests, not the watch, are what k8s measures.
func (k *k8sWorkload) Primary() bool { return false }

func (k *k8sWorkload) Op(ctx context.Context, w *Worker) error {
	switch n := w.Rand.IntN(100); {
	case n < 70:
		return k.update(ctx, w)
	case n < 80:
		name := k8sName(k.created.Add(1) - 1)
		_, err := w.Cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(name), "=", 0)).
			Then(clientv3.OpPut(name, stampedValue(k.value))).Commit()
		return err
	default:
		return k.list(ctx, w)
	}
}

// update reads an object and writes it back if nobody changed it meanwhile.
func (k *k8sWorkload) update(ctx context.Context, w *Worker) error {
	name := k8sName(w.Rand.Int64N(k.created.Load()))
	resp, err := w.Cli.Get(ctx, name)
	if err != nil || len(resp.Kvs) == 0 {
		return err
	}
	_, err = w.Cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(name), "=", resp.Kvs[0].ModRevision)).
		Then(clientv3.OpPut(name, stampedValue(k.value))).
		Else(clientv3.OpGet(name)).Commit()
	return err
}

// list pages through every object at the revision of the first page.
func (k *k8sWorkload) list(ctx context.Context, w *Worker) error {
	end := clientv3.GetPrefixRangeEnd(k8sPrefix)
	key, rev := k8sPrefix, int64(0)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(k.cfg.PageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := w.Cli.Get(ctx, key, opts...)
		if err != nil {
			return err
		}
		if rev == 0 {
			rev = resp.Header.Revision // every further page at this one
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
