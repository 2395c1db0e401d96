package mvcc

import (
	"github.com/cockroachdb/pebble/v2"
)

// latestVersion is what a put needs of the key it replaces: whether the key
// exists, and its create revision, version and lease.
type latestVersion struct {
	exists bool
	create int64
	ver    int64
	lease  int64
}

// latestCacheSize bounds the cache of latest versions (entries).
const latestCacheSize = 1 << 18

// latestCache remembers the latest version of keys, so that a put does not
// seek Pebble for the version it replaces. etcd keeps this for every key in
// its in-memory index; Basalt keeps it while the shard's keys fit, and for
// the most recently written ones beyond.
//
// While the cache is complete (it was loaded from the whole shard and never
// dropped an entry) a key it does not hold does not exist, and a put of a new
// key needs no seek either. Only the shard's apply goroutine uses the cache:
// Writers read it and update it when they commit. It mirrors stored state,
// so what it holds changes speed, never results.
type latestCache struct {
	m        map[string]latestVersion
	complete bool
}

// get returns the cached latest version of key; known is false when the
// store must be asked.
func (c *latestCache) get(key []byte) (v latestVersion, known bool) {
	v, ok := c.m[string(key)]
	return v, ok || c.complete
}

// merge adds a committed batch's latest versions, making room by dropping
// arbitrary entries when full (the cache is then no longer complete).
func (c *latestCache) merge(updates map[string]latestVersion) {
	if c.m == nil {
		c.m = make(map[string]latestVersion, len(updates))
	}
	if over := len(c.m) + len(updates) - latestCacheSize; over > 0 {
		c.complete = false
		for k := range c.m {
			delete(c.m, k)
			if over--; over <= 0 {
				break
			}
		}
	}
	for k, v := range updates {
		c.m[k] = v
	}
}

// load fills the cache from the shard's keys; it is complete if they all
// fit.
func (c *latestCache) load(db *pebble.DB, start, end []byte) error {
	c.m, c.complete = make(map[string]latestVersion), false
	lower, upper := dataSpanBounds(start, end)
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	defer it.Close()
	for valid := it.First(); valid; valid = it.NextPrefix() {
		userKey, _, ok := decodeDataKey(it.Key())
		if !ok {
			return errCorruptValue
		}
		raw, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		v, err := decodeValue(raw)
		if err != nil {
			return err
		}
		if v.tombstone {
			continue
		}
		if len(c.m) == latestCacheSize {
			c.m = make(map[string]latestVersion)
			return nil // too many keys: a cache of the recent ones only
		}
		c.m[string(userKey)] = latestVersion{exists: true, create: v.create, ver: v.ver, lease: v.lease}
	}
	if err := it.Error(); err != nil {
		return err
	}
	c.complete = true
	return nil
}
