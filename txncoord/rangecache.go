package txncoord

import (
	"bytes"
	"slices"
	"sync"

	"github.com/basaltdb/basalt/proto/basaltpb"
)

// RangeCache maps keys to the data shards that own them, from the shard
// descriptors of the meta group. Spans are disjoint and together cover the
// key space.
type RangeCache struct {
	src DescriptorSource // nil: updated by Update only

	mu     sync.RWMutex
	shards []*basaltpb.ShardDescriptor // sorted by start
	gen    uint64                      // src's generation of shards
}

// DescriptorSource is where a RangeCache finds the descriptors: this node's
// replica of the meta group (shard.MetaStateMachine).
type DescriptorSource interface {
	// Shards returns the descriptors and their generation.
	Shards() ([]*basaltpb.ShardDescriptor, uint64)
	// ShardsGen returns the generation of the descriptors, which changes
	// whenever they do.
	ShardsGen() uint64
}

// NewRangeCache returns a cache holding descs.
func NewRangeCache(descs []*basaltpb.ShardDescriptor) *RangeCache {
	c := &RangeCache{}
	c.Update(descs)
	return c
}

// NewRangeCacheFrom returns a cache that follows src: every lookup first
// checks src's generation and reloads when it changed (one atomic load
// when it did not).
func NewRangeCacheFrom(src DescriptorSource) *RangeCache {
	c := &RangeCache{src: src}
	descs, gen := src.Shards()
	c.Update(descs)
	c.gen = gen
	return c
}

// refresh reloads the descriptors when the source has newer ones.
func (c *RangeCache) refresh() {
	if c.src == nil {
		return
	}
	gen := c.src.ShardsGen()
	c.mu.RLock()
	fresh := c.gen == gen
	c.mu.RUnlock()
	if fresh {
		return
	}
	descs, gen := c.src.Shards()
	sorted := sortedDescs(descs)
	c.mu.Lock()
	if gen > c.gen {
		c.shards, c.gen = sorted, gen
	}
	c.mu.Unlock()
}

// Len returns the number of shards.
func (c *RangeCache) Len() int {
	c.refresh()
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.shards)
}

// All returns every shard in key order.
func (c *RangeCache) All() []*basaltpb.ShardDescriptor {
	c.refresh()
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.shards)
}

func sortedDescs(descs []*basaltpb.ShardDescriptor) []*basaltpb.ShardDescriptor {
	sorted := slices.Clone(descs)
	slices.SortFunc(sorted, func(a, b *basaltpb.ShardDescriptor) int { return bytes.Compare(a.Start, b.Start) })
	return sorted
}

// Update replaces the cached descriptors.
func (c *RangeCache) Update(descs []*basaltpb.ShardDescriptor) {
	sorted := sortedDescs(descs)
	c.mu.Lock()
	c.shards = sorted
	c.mu.Unlock()
}

// Lookup returns the shard owning key, or nil.
func (c *RangeCache) Lookup(key []byte) *basaltpb.ShardDescriptor {
	c.refresh()
	c.mu.RLock()
	defer c.mu.RUnlock()
	i := c.search(key)
	if i < 0 {
		return nil
	}
	return c.shards[i]
}

// search returns the index of the last shard starting at or before key.
func (c *RangeCache) search(key []byte) int {
	i, found := slices.BinarySearchFunc(c.shards, key, func(d *basaltpb.ShardDescriptor, k []byte) int {
		return bytes.Compare(d.Start, k)
	})
	if found {
		return i
	}
	i--
	if i < 0 || (len(c.shards[i].End) > 0 && bytes.Compare(key, c.shards[i].End) >= 0) {
		return -1
	}
	return i
}

// Overlapping returns the shards that own keys of [key, end) in key order;
// end follows etcd: nil is the single key, "\x00" every key from key on.
func (c *RangeCache) Overlapping(key, end []byte) []*basaltpb.ShardDescriptor {
	c.refresh()
	c.mu.RLock()
	defer c.mu.RUnlock()
	i := c.search(key)
	if i < 0 {
		return nil
	}
	if len(end) == 0 {
		return c.shards[i : i+1]
	}
	toEnd := len(end) == 1 && end[0] == 0
	if !toEnd && bytes.Compare(key, end) >= 0 {
		return c.shards[i : i+1] // an empty range; its first shard answers it
	}
	j := i + 1
	for j < len(c.shards) && (toEnd || bytes.Compare(c.shards[j].Start, end) < 0) {
		j++
	}
	return c.shards[i:j]
}
