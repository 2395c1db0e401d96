// Package router is the client-facing side of a node: etcd's gRPC services
// (KV, Watch, Lease, Maintenance, Cluster, health, and etcd's own Lock and
// Election servers over a client of this node) and the HTTP/JSON gateway,
// on one port per client URL as etcd serves them.
//
// It checks requests exactly as etcd's v3rpc does (empty keys, sort
// options, ignore_value/ignore_lease, --max-txn-ops, duplicate keys in a
// Txn, --max-request-bytes for writes) before anything runs, hands them to
// the txncoord.Coordinator, and turns every internal error into etcd's gRPC
// error through one table (errors.go), byte for byte as rpctypes, because
// clientv3 recognises errors by their message.
//
// Any node serves any request: when the coordinator answers that another
// member leads what a request needs (shard.NotLeaderError), the router sends
// the same request to that member (peers.go), marked so that it is not
// forwarded again, and retries while the leader moves. Writes travel in
// batches (forward.go); lease calls go to the meta group's leader;
// keep-alive streams are relayed. The Internal service (basalt.proto)
// serves other members: the TSO, lease key revocation, forwarded writes.
//
// Response headers carry the cluster id, this member's id, the Raft term and
// the revision the coordinator reports.
package router
