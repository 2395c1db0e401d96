package difftest

import (
	"context"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestLeaseMatchesEtcd sends the same lease calls, writes with leases and
// watches to Basalt and a real etcd 3.7.3 (with the Raft timings of the
// test node, so that both have the same minimum TTL) and requires the same
// answers: granted TTLs, the keys of a lease, attaching and detaching,
// revocation and expiry deleting every key at one revision with the same
// watch events, and the errors for a lease that exists, does not exist, or
// has too large a TTL. The exact remaining TTL is not compared.
func TestLeaseMatchesEtcd(t *testing.T) {
	w := newWatchPair(t, "--heartbeat-interval=10", "--election-timeout=100")
	b := func(s string) []byte { return []byte(s) }
	putLease := func(k, v string, lease int64) Call {
		return Put(&pb.PutRequest{Key: b(k), Value: b(v), Lease: lease})
	}
	rangePrefix := Range(&pb.RangeRequest{Key: b("l/"), RangeEnd: b("l0")})

	w.send(create(&pb.WatchCreateRequest{Key: b("l/"), RangeEnd: b("l0"), PrevKv: true}))

	// Grants: chosen ids, server-picked ids, the minimum and the maximum TTL.
	w.Run(LeaseGrant(&pb.LeaseGrantRequest{ID: 100, TTL: 600}))
	w.Run(LeaseGrant(&pb.LeaseGrantRequest{ID: 100, TTL: 600})) // exists
	w.Run(LeaseGrant(&pb.LeaseGrantRequest{ID: 200, TTL: 9000000001}))
	w.Run(LeaseGrant(&pb.LeaseGrantRequest{ID: 201, TTL: 9000000000}))
	w.Run(LeaseGrant(&pb.LeaseGrantRequest{ID: 300, TTL: 0}))  // the minimum
	w.Run(LeaseGrant(&pb.LeaseGrantRequest{ID: 301, TTL: -5})) // the minimum
	w.Run(LeaseGrant(&pb.LeaseGrantRequest{ID: -7, TTL: 600})) // negative ids are ids
	w.Run(LeaseGrant(&pb.LeaseGrantRequest{TTL: 30}))          // the server picks
	w.Run(LeaseRevoke(300))
	w.Run(LeaseRevoke(301))
	w.Run(LeaseLeases())

	// Attach, detach, keep.
	w.write(putLease("l/a", "1", 100))
	w.write(putLease("l/b", "1", 100))
	w.write(putLease("l/c", "1", 201))
	w.write(putLease("l/x", "1", 999)) // no such lease
	w.Run(LeaseTimeToLive(100, true))
	w.write(Put(&pb.PutRequest{Key: b("l/b"), Value: b("2")})) // detaches
	w.write(Put(&pb.PutRequest{Key: b("l/a"), Value: b("2"), IgnoreLease: true}))
	w.write(Put(&pb.PutRequest{Key: b("l/z"), IgnoreLease: true, IgnoreValue: true}))
	w.write(Put(&pb.PutRequest{Key: b("l/a"), Value: b("3"), Lease: 100, IgnoreLease: true}))
	w.write(Txn(&pb.TxnRequest{
		Compare: []*pb.Compare{{Key: b("l/a"), Target: pb.Compare_LEASE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Lease{Lease: 100}}},
		Success: []*pb.RequestOp{opPutReq(&pb.PutRequest{Key: b("l/d"), Value: b("1"), Lease: 100}), opPutReq(&pb.PutRequest{Key: b("l/c"), Value: b("2"), Lease: -7})},
	}))
	w.write(Txn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("l/e", "1"), opPutReq(&pb.PutRequest{Key: b("l/f"), Lease: 12345})}}))
	w.Run(LeaseTimeToLive(100, true))
	w.Run(LeaseTimeToLive(-7, true))
	w.Run(LeaseTimeToLive(201, true))
	w.Run(LeaseTimeToLive(100, false))
	w.Run(rangePrefix)

	// Keep-alive renews a live lease and answers TTL 0 for a missing one.
	w.Run(LeaseKeepAlive(100))
	w.Run(LeaseKeepAlive(4242))

	// Revocation deletes every attached key at one revision; a deleted key
	// is no longer attached.
	w.write(Delete(&pb.DeleteRangeRequest{Key: b("l/d")}))
	w.write(LeaseRevoke(100))
	w.Run(LeaseRevoke(100))
	w.Run(LeaseTimeToLive(100, true))
	w.write(LeaseRevoke(201)) // its key moved to lease -7: nothing to delete
	w.write(LeaseRevoke(-7))
	w.Run(rangePrefix)
	w.Run(LeaseLeases())

	// Expiry: a lease with three keys expires and its keys are deleted at
	// one revision, seen by the watch.
	w.Run(LeaseGrant(&pb.LeaseGrantRequest{ID: 500, TTL: 3}))
	w.write(Txn(&pb.TxnRequest{Success: []*pb.RequestOp{
		opPutReq(&pb.PutRequest{Key: b("l/q"), Value: b("v"), Lease: 500}),
		opPutReq(&pb.PutRequest{Key: b("l/p"), Value: b("v"), Lease: 500}),
		opPutReq(&pb.PutRequest{Key: b("l/r"), Value: b("v"), Lease: 500}),
	}}))
	for _, tg := range []*Target{w.Etcd, w.Basalt} {
		waitGone(t, tg, "l/p")
	}
	w.compare("expiry of lease 500")
	w.Run(LeaseTimeToLive(500, true))
	w.Run(rangePrefix)
	w.write(putLease("l/q", "v", 500))
	w.Fail()
}

// waitGone waits until key is deleted.
func waitGone(t *testing.T, tg *Target, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		resp, err := tg.KV.Range(ctx, &pb.RangeRequest{Key: []byte(key), CountOnly: true})
		if err != nil {
			t.Fatalf("waiting for %q to go: %v", key, err)
		}
		if resp.Count == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
