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

// maxInlineKey is the longest key a versionMap holds in place.
const maxInlineKey = 23

// inlineKey is a key of up to maxInlineKey bytes, held in place.
type inlineKey struct {
	n uint8
	b [maxInlineKey]byte
}

// versionMap maps keys to latest versions. Keys of up to maxInlineKey bytes
// are held in place: a lookup then reads no key bytes elsewhere in memory
// (a map of strings cost a cache miss more per put), storing one allocates
// nothing, and the collector does not scan their map, which holds no
// pointers. Longer keys go to a map of strings.
type versionMap struct {
	short map[inlineKey]latestVersion
	long  map[string]latestVersion
}

func toInline(key []byte) (k inlineKey, ok bool) {
	if len(key) > maxInlineKey {
		return k, false
	}
	k.n = uint8(len(key))
	copy(k.b[:], key)
	return k, true
}

func (m *versionMap) get(key []byte) (v latestVersion, ok bool) {
	if k, inline := toInline(key); inline {
		v, ok = m.short[k]
	} else {
		v, ok = m.long[string(key)]
	}
	return v, ok
}

func (m *versionMap) set(key []byte, v latestVersion) {
	if k, inline := toInline(key); inline {
		if m.short == nil {
			m.short = make(map[inlineKey]latestVersion)
		}
		m.short[k] = v
		return
	}
	if m.long == nil {
		m.long = make(map[string]latestVersion)
	}
	m.long[string(key)] = v
}

func (m *versionMap) delete(key []byte) {
	if k, inline := toInline(key); inline {
		delete(m.short, k)
	} else {
		delete(m.long, string(key))
	}
}

func (m *versionMap) len() int { return len(m.short) + len(m.long) }

// dropSome deletes n arbitrary entries.
func (m *versionMap) dropSome(n int) {
	for k := range m.short {
		if n <= 0 {
			return
		}
		delete(m.short, k)
		n--
	}
	for k := range m.long {
		if n <= 0 {
			return
		}
		delete(m.long, k)
		n--
	}
}

// latestCache remembers the latest version of keys, so that a put does not
// seek Pebble for the version it replaces. etcd keeps this for every key in
// its in-memory index; Basalt keeps it while the shard's keys fit, and for
// the most recently written ones beyond.
//
// While the cache is complete (it was loaded from the whole shard and never
// dropped an entry) a key it does not hold does not exist, and a put of a new
// key needs no seek either. Only the shard's apply goroutine uses the cache:
// its Writers read it, set the versions they write, and drop them again if
// their batch does not commit. (A Planner's writers, on the coordinator's
// goroutine, seek the store instead.) It mirrors stored state, so what it
// holds changes speed, never results.
type latestCache struct {
	m        versionMap
	complete bool
}

// get returns the cached latest version of key; known is false when the
// store must be asked.
func (c *latestCache) get(key []byte) (v latestVersion, known bool) {
	v, ok := c.m.get(key)
	return v, ok || c.complete
}

// set records key's latest version, making room by dropping an arbitrary
// entry when full (the cache is then no longer complete).
func (c *latestCache) set(key []byte, v latestVersion) {
	if c.m.len() >= latestCacheSize {
		if _, ok := c.m.get(key); !ok {
			c.complete = false
			c.m.dropSome(1)
		}
	}
	c.m.set(key, v)
}

// forget drops keys whose cached versions were not committed; the store
// must be asked for them again, so the cache is no longer complete.
func (c *latestCache) forget(keys [][]byte) {
	if len(keys) == 0 {
		return
	}
	c.complete = false
	for _, k := range keys {
		c.m.delete(k)
	}
}

// load fills the cache from the shard's keys; it is complete if they all
// fit.
func (c *latestCache) load(db *pebble.DB, start, end []byte) error {
	c.m, c.complete = versionMap{}, false
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
		if c.m.len() == latestCacheSize {
			c.m = versionMap{}
			return nil // too many keys: a cache of the recent ones only
		}
		c.m.set(userKey, latestVersion{exists: true, create: v.create, ver: v.ver, lease: v.lease})
	}
	if err := it.Error(); err != nil {
		return err
	}
	c.complete = true
	return nil
}
