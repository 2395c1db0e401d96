// Package placement runs a node's Raft machinery: it opens the node's Pebble
// store, starts the dragonboat NodeHost and the replicas the node holds (the
// meta group and data shards), bootstraps a new cluster's first data shard,
// and reports leadership changes to whoever needs them (the TSO runs where
// the meta group's leader is).
//
// Invariants:
//   - One NodeHost and one Pebble store per node; every replica on the node
//     shares them.
//   - The meta group is shard 1; data shards are described by the meta
//     group's descriptors, and a new cluster has one data shard (2) that owns
//     the whole key space.
package placement
