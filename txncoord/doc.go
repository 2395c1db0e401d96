// Package txncoord turns etcd's KV requests into work on shards: it owns
// the timestamp oracle (TSO) that hands out cluster-wide revisions, the
// client that batches calls to it, the cache that maps keys to shards, and
// the Coordinator that runs Range, Put, DeleteRange, Txn and Compact.
//
// # Revisions
//
// The TSO runs where the meta group's leader is. It keeps the next revision
// in memory and persists a ceiling a window ahead through the meta group;
// nothing at or above the ceiling has been handed out. A TSO that starts
// begins at the persisted ceiling (the only gap a crash or failover leaves);
// a clean shutdown lowers the ceiling to the next revision first, so a clean
// restart leaves none. Current() confirms leadership of the meta group
// before it answers, so a deposed TSO never reports an old revision.
//
// TSOClient merges its callers' requests: one call to the TSO in flight, one
// Allocate for the sum of the waiting allocations and one Current for all
// waiting readers. In a cluster it calls a RoutedTSO: the local TSO while
// this node leads the meta group, the leader's through the Internal service
// otherwise.
//
// # Requests
//
//   - Range: a linearizable read of one shard runs on the local replica's
//     applied state after a ReadIndex (any replica, followers included);
//     serializable reads skip the ReadIndex.
//   - Txn (Put and DeleteRange are one-operation Txns): a transaction of only
//     ranges is a read. Otherwise it goes to the shard's sequencer; if its
//     chosen branch changes nothing it is answered as a read at Current(),
//     and sequenced again if by then it would write.
//   - Compact checks the revision against the shards and the TSO as etcd
//     does, compacts every shard through its log, and records the revision in
//     the meta group.
//
// A request whose keys fall in more than one shard fails with
// CrossShardError until cross-shard transactions exist.
//
// # Leases
//
// The Lessor runs beside the TSO at the meta group's leader: it grants and
// revokes leases through the meta group, keeps their expiry in memory,
// renews them on keep-alive, revokes the expired ones (the meta group drops
// the lease, then each shard deletes its keys), and checkpoints remaining
// TTLs so that a new lessor continues them.
package txncoord
