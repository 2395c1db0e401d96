// Package shard runs the Raft groups of Basalt on dragonboat: the data
// shards' and the meta group's state machines, and at each data shard's
// leader the sequencer that orders its writes.
//
// # Data shards
//
// DataStateMachine is an IOnDiskStateMachine over the shard's part of the
// node's mvcc store. An entry is a batch of writes, each a marshaled etcd
// TxnRequest with the revision the sequencer took for it, or a compaction.
// Update applies a run of entries in one Pebble batch with the index of the
// last one, so a crash loses a suffix of applied entries and dragonboat
// replays it. Apply is deterministic: it reads nothing but the entries and
// the stored state; it re-evaluates every write (apply is the authority) and
// rejects a write whose revision is not above the shard's (a deposed
// leader's).
//
// # The sequencer (DESIGN §5)
//
// Writes reach the leader's Sequencer. It batches them, and for each:
//
//	unconditional (plain puts)   → into the batch
//	conditional (compares, deletes, ignore_*, leases)
//	  reads overlap a pending write → wait until it is applied
//	  else evaluate on applied state:
//	    error            → answered, no revision
//	    changes nothing  → ErrNoWrite (answered as a read), no revision
//	    writes           → into the batch
//
// then takes one run of revisions from the TSO for the batch and proposes
// it as one entry. Batches are pipelined: the next is proposed before the
// previous is applied, in revision order. While a batch is in flight and
// the node's Raft log store syncs, writes that arrive wait for the sync to
// end and go into one batch (SyncGate): the Raft round they can join
// starts after the sync in any case.
//
// Worked example: puts of a and b arrive with a compare-and-swap on a. The
// puts go into batch 1 (revisions 7, 8); the CAS reads a, which batch 1
// writes, so it waits. Batch 1 applies; the CAS is evaluated against the
// applied state (a at 7), its compare holds, it goes into batch 2 with
// revision 9. Apply evaluates it again and finds the same, because nothing
// else wrote a in between. A CAS whose compare fails takes no revision:
// revisions stay dense.
//
// # Resolved revisions
//
// The sequencer knows which of the shard's revisions are applied: a read at
// revision R waits (WaitResolved) until no allocation is under way and no
// batch with a revision at or below R is pending. Replica.ReadAt adds a
// ReadIndex, which confirms leadership and waits for this replica to apply
// what was committed.
//
// On any replica, DataStateMachine tracks the resolved revision its log
// shows (applied writes, the leader's resolved markers, compactions), so
// that followers serve reads at a TSO revision once they reach it.
//
// # Splits
//
// A split is an entry of the parent's log (SplitCommand): apply shortens
// the parent's span and writes the child's metadata (span, revision,
// compacted revision) in the same batch; the data stays where it is, in
// the node's store, and the child's Raft group starts on the parent's
// voters (OnSplit tells the node). The leader's sequencer proposes
// nothing else while a split is on its way: it first waits until every
// batch it proposed is applied, and checks later writes against the new
// span (ErrWrongShard, also at apply for a deposed leader's entries).
//
// # The meta group
//
// MetaStateMachine (shard 1) holds the TSO ceiling, the shard descriptors
// (span, replicas, epoch; a split records the child and bumps the
// parent's epoch) and the compaction revision (small, written whole when it
// changes), and the lease table (one store key per lease, with the
// remaining TTL of the last checkpoint).
//
// # Leases
//
// A put with a lease is conditional: the sequencer checks that the lease
// exists in the meta group before it takes a revision, and latches the
// lease until the put is applied. Apply does not check leases. A
// revocation (Sequencer.RevokeLease, after the meta group dropped the
// lease) waits for the puts with the lease and for pending writes to its
// keys, then deletes every key attached to it in one transaction.
package shard
