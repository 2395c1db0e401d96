package mvcc

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

// latestCache remembers the latest version of recently written keys, so
// that a put does not seek Pebble for the version it replaces (etcd keeps
// this in its in-memory index for every key; Basalt keeps it for the hot
// ones). Only the shard's apply goroutine uses it: Writers read it and
// update it when they commit. It mirrors stored state, so what it holds or
// forgets changes speed, never results.
type latestCache struct {
	m map[string]latestVersion
}

func (c *latestCache) get(key []byte) (latestVersion, bool) {
	v, ok := c.m[string(key)]
	return v, ok
}

// merge adds a committed batch's latest versions, making room by dropping
// arbitrary entries when full.
func (c *latestCache) merge(updates map[string]latestVersion) {
	if c.m == nil {
		c.m = make(map[string]latestVersion, len(updates))
	}
	if over := len(c.m) + len(updates) - latestCacheSize; over > 0 {
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

// reset forgets everything (after the shard's state was replaced).
func (c *latestCache) reset() { c.m = nil }
