// Package watchfanout serves etcd's watches on a node (DESIGN §7). One
// group of watchers is fed by every shard replica on the node: the events
// of every applied write, and each shard's resolved revision (every write
// of the shard at or below it is applied). Events wait until every shard
// has resolved their revision, then go out in revision order: the group's
// resolved revision is the lowest of the shards'. It advances only while
// the shards' spans cover the key space, so that during a split (the
// parent's span shrinks before the new shard's replica joins the group)
// nothing is released that the new shard might still write below.
//
// A watcher is synced or unsynced. Synced watchers get each revision's
// events as soon as every shard has resolved it, in one response per
// revision (atomic, ordered). Unsynced ones are caught up from the shards'
// change logs (merged by revision), at most 1000 revisions per response,
// and join the synced ones when
// they reach the resolved revision. A watcher starts unsynced when it asks
// for past revisions; it becomes unsynced again when its stream's buffer is
// full (a slow consumer), when the feed overflows, or when a Raft snapshot
// replaces a shard replica's state (its writes were never published). Writers never
// wait for watchers: a slow one costs a change-log read later. A watcher
// whose next revision has been compacted is cancelled with the compacted
// revision, as etcd does.
//
// Worked example, one shard: the shard is at revision 10; a watch of "a" from 8 is
// unsynced with minRev 8. The sync loop reads the change log [8, 10] and
// sends the events of "a" in one response (header revision 10); minRev
// becomes 11 and the watcher is synced. A put of "a" at 11 is dispatched
// to it directly; a put of "b" at 12 is not (other key), but the resolved
// revision becomes 12, so a progress request then reports 12: every event
// of "a" at or below 12 has been sent. With a second shard that holds
// "b" and last resolved 11, the put of "a" at 11 goes out when that
// shard's resolved revision (published at least every 100 ms, at once
// when the group asks) reaches 11.
//
// Invariant: a watcher's minRev is the first revision it has not been
// sent; every response carries only revisions at or above it, and then
// advances it. So nothing is sent twice and nothing is skipped.
package watchfanout
