package mvcc

import (
	"context"
	"slices"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// putLeased writes key attached to lease at the next revision.
func (s *testShard) putLeased(key string, lease int64) {
	s.t.Helper()
	w := s.sh.NewWriter()
	rt := txnOf(&pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte("v"), Lease: lease}}})
	if _, _, err := w.ApplyTxn(context.Background(), s.sh.Rev()+1, rt, AllowAllLeases); err != nil {
		s.t.Fatal(err)
	}
	s.index++
	if err := w.Commit(s.index); err != nil {
		s.t.Fatal(err)
	}
}

// Each shard of a store lists the leases with keys in its span, and only
// those, from the lease index the shards share.
func TestLeaseIDsPerShard(t *testing.T) {
	s := newTestShard(t)
	s.putLeased("a", 5)
	s.putLeased("d", 5) // both shards
	s.putLeased("a1", 6)
	s.putLeased("b", 6) // the parent only
	s.putLeased("e", 7)
	s.putLeased("f", 7) // the child only
	s.putLeased("b1", 8)
	s.put("b1", "no lease") // no shard: its only key left it
	s.putLeased("c", -1)    // the largest id, as etcd's int64 ids wrap
	child := s.split("c")

	for _, tc := range []struct {
		sh   *Shard
		want []int64
	}{
		{s.sh, []int64{5, 6}},
		{child, []int64{5, 7, -1}},
	} {
		got, err := tc.sh.LeaseIDs()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) {
			start, end := tc.sh.Span()
			t.Errorf("shard [%q, %q): leases %v, want %v", start, end, got, tc.want)
		}
	}
}

// Each shard counts its own commit records, whatever the ids and whatever
// its neighbours keep.
func TestTxnRecordsPerShard(t *testing.T) {
	s := newTestShard(t)
	child := s.split("m")
	record := func(sh *Shard, id uint64, keep bool) {
		t.Helper()
		w := sh.NewWriter()
		var rec []byte
		if keep {
			rec = []byte("record")
		}
		w.SetTxnRecord(id, rec)
		s.index++
		if err := w.Commit(s.index); err != nil {
			t.Fatal(err)
		}
	}
	record(s.sh, 1, true)
	record(s.sh, ^uint64(0), true) // the largest id
	record(child, 0x2f, true)      // '/' in the id's bytes
	record(s.sh, 1, false)
	for _, tc := range []struct {
		sh   *Shard
		want uint64
	}{{s.sh, ^uint64(0)}, {child, 0x2f}} {
		got, err := tc.sh.TxnRecords()
		if err != nil || len(got) != 1 || got[0].ID != tc.want || string(got[0].Data) != "record" {
			t.Errorf("shard %d: records %v (%v), want only %x", tc.sh.ID(), got, err, tc.want)
		}
	}
}
