package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/basaltdb/basalt/proto/basaltpb"
)

// SplitKeys returns the n-1 keys that split the benchmark's key space into
// n shards of about equal size. Keys are makeKey's zig-zag varints: for
// numbers from 64 on, the first byte is 0x80 plus the low 7 bits of twice
// the number, spread evenly over [0x80, 0xff].
func SplitKeys(n int) [][]byte {
	var keys [][]byte
	for i := 1; i < n; i++ {
		keys = append(keys, []byte{byte(0x80 + i*128/n)})
	}
	return keys
}

// keyInPart returns a random key number below space whose key falls in
// part i of the n parts SplitKeys(n) makes: a number from 64 on whose low 6
// bits place the key's first byte in the part.
func keyInPart(r *rand.Rand, space int64, i, n int) int64 {
	lo, hi := int64(i*64/n), int64((i+1)*64/n)
	high := 64 + r.Int64N(max(space-64, 64))&^63
	return high | (lo + r.Int64N(max(hi-lo, 1)))
}

// splitBasalt splits a Basalt cluster's key space into n shards
// (basaltctl shard split at each of SplitKeys), through endpoint.
func splitBasalt(ctx context.Context, endpoint string, n int) error {
	u, err := url.Parse(endpoint)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(u.Host, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	c := basaltpb.NewInternalClient(conn)
	for _, k := range SplitKeys(n) {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := c.Split(sctx, &basaltpb.SplitRequest{Key: k})
		cancel()
		if err != nil {
			return fmt.Errorf("bench: split at %q: %w", k, err)
		}
	}
	return nil
}
