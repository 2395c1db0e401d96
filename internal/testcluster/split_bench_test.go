package testcluster

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	splitMiB   = flag.Int("split.mib", 1024, "BenchmarkSplit: MiB of values in the shard that splits")
	splitNodes = flag.Int("split.nodes", 1, "BenchmarkSplit: members in the cluster")
)

// BenchmarkSplit measures what splitting a large shard costs: it fills one
// shard with -split.mib MiB of incompressible 16 KiB values, waits until
// the disks are quiet, then
//   - splits it at its middle key as `basaltctl shard split` does, and
//     reports the time until the split returns and a write to the new
//     shard is acknowledged (split-ms), and the bytes the process wrote to
//     disk from the split until the disk is quiet again (split-bytes);
//   - restarts the cluster with a split size of 40% of the data, so that
//     each half splits again at its middle key by itself, and reports the
//     time from the restart until both have split (bysize-ms, which
//     includes finding the middle keys) and the bytes written meanwhile
//     (bysize-bytes, which include the restart's own writes).
//
// Bytes are write_bytes from /proc/self/io: every member runs in this
// process. It loads a GiB by default, so run it alone:
//
//	go test -run - -bench Split -benchtime 1x ./internal/testcluster
func BenchmarkSplit(b *testing.B) {
	for range b.N {
		benchmarkSplit(b)
	}
}

func benchmarkSplit(b *testing.B) {
	const valueSize = 16 << 10
	keys := *splitMiB << 20 / valueSize
	key := func(i int) string { return fmt.Sprintf("s%08d", i) }

	c := Start(b, *splitNodes)
	ctx := ctxT(b, time.Hour)
	loadValues(b, ctx, c.Client(b), keys, valueSize, key)
	waitDiskQuiet(b)
	before := shards(b, c, 0)
	if len(before) != 1 {
		b.Fatalf("%d shards before the split, want 1", len(before))
	}
	b.Logf("one shard: %d keys, %d MiB on disk", before[0].Keys, before[0].Size>>20)

	w0 := writeBytes(b)
	t0 := time.Now()
	split(b, c, 0, key(keys/2))
	if _, err := c.Client(b).Put(ctx, key(keys-1), "after the split"); err != nil {
		b.Fatal(err)
	}
	splitTime := time.Since(t0)
	waitDiskQuiet(b)
	b.ReportMetric(float64(splitTime.Milliseconds()), "split-ms")
	b.ReportMetric(float64(writeBytes(b)-w0), "split-bytes")

	all := c.running()
	c.StopAll()
	size := int64(before[0].Size)
	for i := range c.Nodes {
		c.Configure(i, WithShardSplitSize(size*4/10, 10*time.Millisecond))
	}
	w0 = writeBytes(b)
	t0 = time.Now()
	c.Restart(all...)
	for len(shards(b, c, 0)) < 4 {
		if ctx.Err() != nil {
			b.Fatal("the halves did not split by size")
		}
		time.Sleep(10 * time.Millisecond)
	}
	bySize := time.Since(t0)
	waitDiskQuiet(b)
	b.ReportMetric(float64(bySize.Milliseconds()), "bysize-ms")
	b.ReportMetric(float64(writeBytes(b)-w0), "bysize-bytes")
	for _, s := range shards(b, c, 0) {
		b.Logf("shard %d [%q, %q): %d keys, %d MiB", s.Descriptor_.ShardId, s.Descriptor_.Start, s.Descriptor_.End, s.Keys, s.Size>>20)
	}
}

// loadValues puts keys keys of random valueSize-byte values, in
// transactions of about 768 KiB from 8 clients at once, each retried.
func loadValues(b *testing.B, ctx context.Context, cl *clientv3.Client, keys, valueSize int, key func(int) string) {
	perTxn := max(1, 768<<10/valueSize)
	next := make(chan int)
	go func() {
		defer close(next)
		for i := 0; i < keys; i += perTxn {
			next <- i
		}
	}()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			rnd := rand.NewChaCha8([32]byte{byte(w)})
			for first := range next {
				var ops []clientv3.Op
				for i := first; i < min(first+perTxn, keys); i++ {
					v := make([]byte, valueSize)
					_, _ = rnd.Read(v)
					ops = append(ops, clientv3.OpPut(key(i), string(v)))
				}
				// Under this load a 3-member cluster with the test's short
				// election timeout may change leaders: put again.
				var err error
				for try := 0; try < 10; try++ {
					if _, err = cl.Txn(ctx).Then(ops...).Commit(); err == nil {
						break
					}
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}

// waitDiskQuiet waits until the process has written nothing to disk for 3
// seconds (flushes and compactions are done), at most 5 minutes.
func waitDiskQuiet(b *testing.B) {
	last, quiet := writeBytes(b), 0
	for deadline := time.Now().Add(5 * time.Minute); quiet < 3 && time.Now().Before(deadline); {
		time.Sleep(time.Second)
		n := writeBytes(b)
		if n == last {
			quiet++
		} else {
			last, quiet = n, 0
		}
	}
}

// writeBytes returns the bytes this process has caused to be written to
// storage (write_bytes in /proc/self/io).
func writeBytes(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Fatal(err)
	}
	s := bufio.NewScanner(bytes.NewReader(data))
	for s.Scan() {
		if v, ok := bytes.CutPrefix(s.Bytes(), []byte("write_bytes: ")); ok {
			n, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal("no write_bytes in /proc/self/io")
	return 0
}
