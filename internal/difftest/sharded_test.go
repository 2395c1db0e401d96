package difftest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/basaltdb/basalt/proto/basaltpb"
)

const (
	shardedKeys   = 2000 // k0000 .. k1999
	shardedBucket = 125  // keys between two possible split points
)

func shardedKey(i int) string { return fmt.Sprintf("k%04d", i) }

// split splits Basalt's shard that holds key at key.
func (p *Pair) split(key string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := basaltpb.NewInternalClient(p.Basalt.conn).Split(ctx, &basaltpb.SplitRequest{Key: []byte(key)}); err != nil {
		p.t.Fatalf("split at %q: %v", key, err)
	}
}

// TestShardedKVMatchesEtcd spreads thousands of keys over many shards and
// requires Basalt to answer as one etcd: Range with every option over
// spans that cross shards, writes and transactions in one shard (keys of
// one bucket between two possible split points) and across shards (any
// keys), compaction, pagination at a fixed revision, HashKV, with splits
// forced between the requests.
func TestShardedKVMatchesEtcd(t *testing.T) {
	p := newPair(t)
	var all []string
	for i := 0; i < shardedKeys; i++ {
		all = append(all, shardedKey(i))
	}
	for i := 0; i < shardedKeys; i += 100 {
		var ops []*pb.RequestOp
		for j := i; j < i+100; j++ {
			ops = append(ops, opPut(shardedKey(j), fmt.Sprintf("v%d", j)))
		}
		p.Run(Txn(&pb.TxnRequest{Success: ops}))
	}
	// Boundaries every 250 keys now, the others in between later.
	var later []string
	for i := shardedBucket; i < shardedKeys; i += shardedBucket {
		if i%(2*shardedBucket) == 0 {
			p.split(shardedKey(i))
		} else {
			later = append(later, shardedKey(i))
		}
	}

	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("random sequence seed %d (rerun with -difftest.seed=%d)", seed, seed)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	// Ranges also ask for keys that do not exist, around and between.
	rangeKeys := append([]string{"", "a", "k", "k0", "k05", "k1", "k19999", "l", "\xff"}, all...)
	g := &gen{r: r, p: p}
	steps := *stepsFlag / 3
	for i := 0; i < steps; i++ {
		if i%(steps/len(later)+1) == 0 && len(later) > 0 {
			p.split(later[0])
			later = later[1:]
		}
		switch n := r.IntN(100); {
		case n < 45:
			b := r.IntN(shardedKeys / shardedBucket)
			g.keys, g.bounded = all[b*shardedBucket:(b+1)*shardedBucket], true
			if r.IntN(3) == 0 {
				g.keys = all // most likely across shards
			}
			switch {
			case n < 20:
				p.Run(Put(g.putReq()))
			case n < 27:
				p.Run(Delete(g.deleteReq()))
			default:
				p.Run(Txn(g.txnReq(2)))
			}
		case n < 82:
			g.keys, g.bounded = rangeKeys, false
			p.Run(Range(g.rangeReq()))
		case n < 90:
			// RangeStream takes the default order and no revision filters.
			g.keys, g.bounded = rangeKeys, false
			req := g.rangeReq()
			req.SortOrder, req.SortTarget = 0, 0
			req.MinModRevision, req.MaxModRevision, req.MinCreateRevision, req.MaxCreateRevision = 0, 0, 0, 0
			if req.Limit == 0 && r.IntN(2) == 0 {
				req.Limit = 1 + r.Int64N(700)
			}
			p.Run(RangeStream(req))
		case n < 93:
			rev := g.compacted - 1 + r.Int64N(p.Rev-g.compacted+3)
			if err := p.Compact(rev, r.IntN(2) == 0); err == nil {
				g.compacted = rev
			}
		default:
			pageThrough(p, 1+r.Int64N(300))
		}
	}
	p.Fail()
	for _, k := range later {
		p.split(k)
	}

	// Writes across shards, at one revision each.
	p.Run(Txn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("k0001", "x"), opPut("k1999", "x")}}))
	p.Run(Txn(&pb.TxnRequest{
		Compare: []*pb.Compare{{Key: []byte("k0001"), Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Value{Value: []byte("x")}}},
		Success: []*pb.RequestOp{
			{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("k0990"), RangeEnd: []byte("k1010")}}},
			{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("k0995"), RangeEnd: []byte("k1005"), PrevKv: true}}},
			{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("k0990"), RangeEnd: []byte("k1010"), CountOnly: true}}},
			opPut("k0500", "y"),
		},
	}))
	p.Run(Delete(&pb.DeleteRangeRequest{Key: []byte("k08"), RangeEnd: []byte("k12"), PrevKv: true}))
	p.Fail()

	// Every uncompacted revision reads the same, and the hashes agree.
	for rev := max(g.compacted, 1); rev <= p.Rev; rev += 1 + p.Rev/50 {
		p.Run(Range(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: rev}))
		p.HashKV(rev)
	}
	p.Run(Range(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}))
	p.Run(RangeStream(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}))
	p.Run(RangeStream(&pb.RangeRequest{Key: []byte("k0100"), RangeEnd: []byte("k1900"), Limit: 1000, Revision: p.Rev - 5}))
	p.HashKV(0)
	p.Fail()
	streamsShardByShard(t, p.Basalt)
}

// streamsShardByShard checks that each RangeStream chunk holds keys of one
// shard.
func streamsShardByShard(t *testing.T, b *Target) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shards, err := basaltpb.NewInternalClient(b.conn).Shards(ctx, &basaltpb.ShardsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	shardOf := func(key []byte) int {
		for i, s := range shards.Shards {
			d := s.Descriptor_
			if string(key) >= string(d.Start) && (len(d.End) == 0 || string(key) < string(d.End)) {
				return i
			}
		}
		return -1
	}
	stream, err := b.KV.RangeStream(ctx, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
	if err != nil {
		t.Fatal(err)
	}
	chunks := 0
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		kvs := chunk.RangeResponse.Kvs
		for _, kv := range kvs {
			if shardOf(kv.Key) != shardOf(kvs[0].Key) {
				t.Fatalf("a RangeStream chunk holds %q and %q, of two shards", kvs[0].Key, kv.Key)
			}
		}
		chunks++
	}
	holding := 0 // shards with keys (deletes across shards may empty some)
	for _, s := range shards.Shards {
		if s.Keys > 0 {
			holding++
		}
	}
	if chunks < holding {
		t.Fatalf("%d chunks for %d shards with keys", chunks, holding)
	}
}

// pageThrough reads every key in pages of limit at one revision, as a
// client paginates, comparing each page.
func pageThrough(p *Pair, limit int64) {
	p.t.Helper()
	rev := p.Rev
	key := []byte("k")
	for {
		m, err := p.Run(Range(&pb.RangeRequest{Key: key, RangeEnd: []byte{0}, Limit: limit, Revision: rev}))
		if err != nil {
			return
		}
		resp := m.(*pb.RangeResponse)
		if !resp.More || len(resp.Kvs) == 0 {
			return
		}
		key = append(resp.Kvs[len(resp.Kvs)-1].Key, 0)
	}
}
