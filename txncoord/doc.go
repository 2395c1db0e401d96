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
//   - Range: while one shard holds the whole key space, a linearizable read
//     runs on the local replica's applied state after a ReadIndex (any
//     replica, followers included). Once shards split, it runs at R, the
//     TSO's current revision, after each shard it reads has resolved R
//     (Replica.ReadAt), on one view over the shards' adjacent spans in the
//     node's store (mvcc.ViewAcross): every Range option works across
//     shards as over one. Serializable reads use the replicas' resolved
//     revisions, without a Raft round trip.
//   - Txn (Put and DeleteRange are one-operation Txns): a transaction of only
//     ranges is a read. Otherwise it goes to the shard's sequencer; if its
//     chosen branch changes nothing it is answered as a read at Current(),
//     and sequenced again if by then it would write.
//   - Compact checks the revision against the shards and the TSO as etcd
//     does, compacts every shard through its log, and records the revision in
//     the meta group.
//
// # Transactions across shards
//
// A write Txn (or DeleteRange) whose keys fall in several shards runs as a
// transaction across them (txnAcross, DESIGN §5), on the member that leads
// its primary shard (the lowest shard id; Txn answers a NotLeaderError
// naming it, and the router forwards). There, concurrent ones form groups
// (runGroup). A group locks each of its shards through its Raft log, in
// shard id order, so that two groups never wait for each other. A locked
// shard applies no other write until the group commits or aborts there:
// its applied state is the cluster's just before the group's revisions,
// and reads above the lock's start revision wait. The coordinator works the
// transactions out in turn against its own replicas (mvcc.Planner: etcd's
// semantics exactly, one revision each from the TSO, sub revisions in
// operation order), commits the primary (its commit is the commit point and
// records the other shards' writes), then the others, then drops the
// record. A transaction whose chosen branch writes nothing is answered as a
// read and takes no revision.
//
// A lock held past its TTL (the coordinator died or stalled) is resolved by
// the shard's leader (ResolveLock): an abort at the primary either rolls
// the transaction back there, and then everywhere, or finds its commit
// record, and the shard commits its part.
//
// # Routing and splits
//
// RangeCache follows this node's replica of the meta group (a generation
// number, one atomic load per lookup). A shard answers shard.ErrWrongShard
// for keys outside its span (it split, or the cache is behind); the
// coordinator catches its meta replica up and retries, so clients never see
// it. SplitHere splits a shard its node leads: a new shard id from the
// meta group, the split through the shard's Raft log, then its record in
// the meta group (the new shard's leader records it too, should the
// splitter fail in between). SplitLarge splits the shards over a size at
// their middle keys (--shard-split-size).
//
// # Leases
//
// The Lessor runs beside the TSO at the meta group's leader: it grants and
// revokes leases through the meta group, keeps their expiry in memory,
// renews them on keep-alive, revokes the expired ones (the meta group drops
// the lease, then its keys are deleted at one revision: by their shard, or
// by a transaction across shards), and checkpoints remaining
// TTLs so that a new lessor continues them.
package txncoord
