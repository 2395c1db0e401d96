package router_test

import (
	"context"
	"testing"

	"github.com/basaltdb/basalt/internal/testnode"
	"github.com/basaltdb/basalt/proto/basaltpb"
)

// BenchmarkTSOAllocate measures the TSO at saturation: many concurrent
// callers each take one revision through the Internal service (as members
// that do not lead the meta group, and coordinators of transactions across
// shards, do). allocs/s is revisions handed out per second.
//
//	go test -run - -bench TSOAllocate -benchtime 5s ./router
func BenchmarkTSOAllocate(b *testing.B) {
	n := testnode.Start(b)
	cl := basaltpb.NewInternalClient(n.Client(b).ActiveConnection())
	ctx := context.Background()
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := cl.Allocate(ctx, &basaltpb.AllocateRequest{Count: 1}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "allocs/s")
}
