// Package placement runs a node's Raft machinery and its membership: it
// opens the node's Pebble store, starts the dragonboat NodeHost and the
// replicas the node holds (the meta group and data shards), bootstraps a
// new cluster, keeps the member registry (MemberAdd, MemberRemove,
// MemberUpdate, MemberPromote as dragonboat membership changes), runs the
// memberlist gossip through which a node joins with --join, carries the
// members' Raft messages and snapshots (TCPTransport), and reports
// leadership changes to whoever needs them (the TSO runs where the meta
// group's leader is). It also tells the node's sequencers when the Raft
// log store syncs (logsync.go), by wrapping the default file system of the
// Pebble version dragonboat's log store runs on, and through that wrapper
// skips the syncs of Raft states whose commit index alone moved
// (logscan.go), as etcd's raft does.
//
// Invariants:
//   - One NodeHost and one Pebble store per node; every replica on the node
//     shares them.
//   - A member's id is etcd's hash of its peer URLs and the cluster token,
//     and is its replica id in every group; ids are never reused.
//   - The meta group is shard 1; data shards are described by the meta
//     group's descriptors, and a new cluster has one data shard (2) that owns
//     the whole key space. A shard created by a split starts on its
//     parent's voters, on their stores, where its data already is. Every
//     member holds a replica of every group.
//   - A member that joined a running cluster starts its replicas as
//     non-voting ones (also after a restart: its log promotes them again).
package placement
