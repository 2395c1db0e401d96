package mvcc

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// BenchmarkApplyPuts applies batches of 100 puts of 256-byte values over a
// space of 100k random 8-byte keys, as the put benchmark does.
func BenchmarkApplyPuts(b *testing.B) {
	st, err := Open(b.TempDir(), Options{FS: vfs.Default})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	sh, _ := st.OpenShard(2, nil, nil)
	r := rand.New(rand.NewPCG(1, 2))
	value := make([]byte, 256)
	rev := int64(2)
	b.ResetTimer()
	for i := 0; i < b.N; i += 100 {
		w := sh.NewWriter()
		for j := 0; j < 100; j++ {
			k := make([]byte, 8)
			binary.PutVarint(k, r.Int64N(100000))
			txn := &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: k, Value: value}}}}}
			if _, _, err := w.ApplyTxn(context.Background(), rev, txn, nil); err != nil {
				b.Fatal(err)
			}
			rev++
		}
		if err := w.Commit(uint64(i + 1)); err != nil {
			b.Fatal(err)
		}
	}
}
