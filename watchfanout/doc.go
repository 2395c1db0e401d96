// Package watchfanout serves etcd's watches on a node (DESIGN §7). For
// each shard replica on the node it keeps a group of watchers fed by the
// shard: the events of every applied write, and the shard's resolved
// revision (every write of the shard at or below it is applied).
//
// A watcher is synced or unsynced. Synced watchers get each revision's
// events as soon as the shard publishes them, in one response per revision
// (atomic, ordered). Unsynced ones are caught up from the shard's change
// log, at most 1000 revisions per response, and join the synced ones when
// they reach the resolved revision. A watcher starts unsynced when it asks
// for past revisions; it becomes unsynced again when its stream's buffer is
// full (a slow consumer), or when the shard's feed overflows. Writers never
// wait for watchers: a slow one costs a change-log read later. A watcher
// whose next revision has been compacted is cancelled with the compacted
// revision, as etcd does.
//
// Worked example: the shard is at revision 10; a watch of "a" from 8 is
// unsynced with minRev 8. The sync loop reads the change log [8, 10] and
// sends the events of "a" in one response (header revision 10); minRev
// becomes 11 and the watcher is synced. A put of "a" at 11 is dispatched
// to it directly; a put of "b" at 12 is not (other key), but the resolved
// revision becomes 12, so a progress request then reports 12: every event
// of "a" at or below 12 has been sent.
//
// Invariant: a watcher's minRev is the first revision it has not been
// sent; every response carries only revisions at or above it, and then
// advances it. So nothing is sent twice and nothing is skipped.
//
// Watches span one shard today; ranges across shards come with cross-shard
// merging (DESIGN §7, by revision under the minimum resolved revision).
package watchfanout
