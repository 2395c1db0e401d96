// Package node assembles one Basalt node from its parts (placement's Raft
// host and gossip, the TSO, the coordinator and the router's client server)
// and takes it down again in order. It finds the node's member id: from
// --initial-cluster, or by joining a running cluster through its gossip. cmd/basalt and the in-process test harness both
// start nodes through it.
package node
