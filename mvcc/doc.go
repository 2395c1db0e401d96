// Package mvcc stores the versions of etcd keys in Pebble and answers etcd's
// KV operations on them: range reads at any uncompacted revision with every
// RangeRequest option, puts and range deletes, transactions with compares
// and nested transactions, compaction and HashKV.
//
// # Layout
//
// One Pebble instance per node holds every shard replica of the node; their
// key spans are disjoint. The first byte of a Pebble key is its keyspace:
//
//	d <user key> 00 <^main:8> <^sub:8> 11   a version of a key
//	c <main:8> <sub:8> 00                   change log: event type, user key
//	l <lease:8> <user key> 00               lease index
//	x ...                                   2PC intents (reserved)
//	m <shard:8> <name> 00                   shard metadata
//
// A data key is a prefix ('d', the user key, a zero sentinel) and a suffix
// (the inverted revision and the suffix length 0x11). The Comparer orders by
// prefix and then by suffix, so the versions of a key sit together, newest
// first, after the bare prefix; Split returns the prefix, which lets Pebble
// use SeekPrefixGE, NextPrefix and per-key bloom filters. Every other key
// ends in the zero sentinel, which tells Split it has no suffix.
//
// A value is a kind byte (put or tombstone), then for a put the create
// revision, the version and the lease as varints and the value bytes. The
// mod revision is the key's own revision.
//
// # Worked example
//
// Put foo=a at revision 2, put foo=b at 3, delete foo at 4, put foo=c at 5:
//
//	d foo 00 @5.0  put  create=5 version=1 "c"
//	d foo 00 @4.0  tombstone
//	d foo 00 @3.0  put  create=2 version=2 "b"
//	d foo 00 @2.0  put  create=2 version=1 "a"
//	c 2.0 → put foo;  c 3.0 → put foo;  c 4.0 → delete foo;  c 5.0 → put foo
//
// A read at revision 3 seeks to foo@3 and finds "b"; at 4 it finds the
// tombstone and reports no key; at 5 it finds "c" with create revision 5 and
// version 1, a new generation of the key. Compact(4) walks the change log up
// to 4, keeps nothing of foo at or below 4 (its newest version there is a
// tombstone) and deletes the change log below 4 (the entry at 4 stays, so a
// watch may still start at 4); reads at 4 and 5 answer as before, reads at 3
// fail with ErrCompacted.
//
// # Invariants
//
//   - Every change of a write transaction has the transaction's main revision
//     and a sub revision that numbers the changes in order.
//   - A data version and its change log entry are written in the same batch,
//     with the shard's applied Raft index and revision.
//   - Compaction publishes the compacted revision before it deletes versions,
//     and readers check it after they open their iterator; a read either sees
//     every version its revision needs or fails with ErrCompacted.
//   - Transactions behave as etcd 3.7's: the same checks in the same order,
//     the same revisions in every response header, the same sort algorithm
//     (so that ties come out in the same order).
package mvcc
