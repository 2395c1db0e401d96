package txncoord

import (
	"bytes"
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/proto/basaltpb"
	"github.com/basaltdb/basalt/shard"
)

// ErrSplitAtBoundary is returned for a split at a key where a shard
// already starts.
var ErrSplitAtBoundary = errors.New("basalt: a shard already starts at this key")

// SplitHere splits the shard that owns key at key, when this node's replica
// leads it (else a NotLeaderError names the leader): a new shard id from the
// meta group, the split through the shard's Raft log, then its record in
// the meta group. It returns the two shards' descriptors.
func (c *Coordinator) SplitHere(ctx context.Context, key []byte) (left, right *basaltpb.ShardDescriptor, err error) {
	err = c.retry(ctx, func() error {
		d := c.cache.Lookup(key)
		if d == nil {
			return errors.New("txncoord: no shard descriptors")
		}
		if bytes.Equal(d.Start, key) {
			return ErrSplitAtBoundary
		}
		rep, err := c.shards.Replica(d.ShardId)
		if err != nil {
			return err
		}
		if !rep.IsLeader() {
			leader, _ := rep.Leader()
			return &shard.NotLeaderError{ShardID: d.ShardId, Leader: leader}
		}
		id, err := c.shards.AllocShardID(ctx)
		if err != nil {
			return err
		}
		if right, err = rep.Split(ctx, key, id); err != nil {
			return err
		}
		return c.shards.RecordSplit(ctx, d.ShardId, right)
	})
	if err != nil {
		return nil, nil, err
	}
	// This node holds a replica of the new shard (it starts on the
	// parent's replicas): return once it serves.
	err = Retry(ctx, func() error {
		_, err := c.shards.Replica(right.ShardId)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	for _, d := range c.cache.All() {
		if bytes.Equal(d.End, key) {
			left = d
		}
	}
	return left, right, nil
}

// ShardEnd returns the end of the span of the shard that holds key (empty:
// the last shard, or none known).
func (c *Coordinator) ShardEnd(key []byte) []byte {
	if d := c.cache.Lookup(key); d != nil {
		return d.End
	}
	return nil
}

// ShardInfo is what a node knows of a shard from its replica.
type ShardInfo struct {
	Descriptor *basaltpb.ShardDescriptor
	Leader     uint64
	Size       uint64
	Keys       int64
	Revision   int64
}

// Shards describes every shard, with what this node's replica tells of it
// (leader, approximate size, keys at its applied revision).
func (c *Coordinator) Shards(ctx context.Context) ([]ShardInfo, error) {
	if err := c.meta.Sync(ctx); err != nil {
		return nil, err
	}
	var out []ShardInfo
	for _, d := range c.cache.All() {
		info := ShardInfo{Descriptor: d}
		if rep, err := c.shards.Replica(d.ShardId); err == nil {
			info.Leader, _ = rep.Leader()
			sh := rep.Shard()
			info.Revision = sh.Rev()
			if info.Size, err = sh.ApproxSize(); err != nil {
				return nil, err
			}
			res, err := sh.View().Range(ctx, d.Start, spanRangeEnd(d.End), mvcc.RangeOptions{CountOnly: true})
			if err != nil {
				return nil, err
			}
			info.Keys = int64(res.Count)
		}
		out = append(out, info)
	}
	return out, nil
}

// spanRangeEnd is the mvcc range end of a span's end: empty and not nil
// reads every key on.
func spanRangeEnd(end []byte) []byte {
	if len(end) == 0 {
		return []byte{}
	}
	return end
}

// SplitLarge splits, at its middle key, each shard this node leads whose
// data on disk exceeds size bytes (memtables holding more than size are
// flushed first, so that recent writes count). It returns the number of
// splits.
func (c *Coordinator) SplitLarge(ctx context.Context, size int64) (int, error) {
	splits := 0
	for _, d := range c.cache.All() {
		rep, err := c.shards.Replica(d.ShardId)
		if err != nil || !rep.IsLeader() {
			continue
		}
		sh := rep.Shard()
		if err := sh.Store().FlushIfMemTableOver(size); err != nil {
			return splits, err
		}
		if n, err := sh.ApproxSize(); err != nil || int64(n) <= size {
			if err != nil {
				return splits, err
			}
			continue
		}
		key, err := sh.MiddleKey()
		if err != nil {
			return splits, err
		}
		if key == nil {
			continue // one key: nothing to split
		}
		if _, _, err := c.SplitHere(ctx, key); err != nil {
			return splits, err
		}
		c.lg.Info("split-large-shard", zap.Uint64("shard-id", d.ShardId), zap.ByteString("key", key))
		splits++
	}
	return splits, nil
}

// SplitLargeLoop runs SplitLarge every interval until ctx ends.
func (c *Coordinator) SplitLargeLoop(ctx context.Context, size int64, interval time.Duration) {
	every(ctx, interval, func() {
		if _, err := c.SplitLarge(ctx, size); err != nil && ctx.Err() == nil {
			c.lg.Warn("split-large-shards", zap.Error(err))
		}
	})
}

// every runs fn every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
