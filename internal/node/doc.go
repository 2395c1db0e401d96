// Package node assembles one Basalt node from its parts (placement's Raft
// host, the TSO, the coordinator and the router's client server) and takes
// it down again in order. cmd/basalt and the in-process test harness both
// start nodes through it.
package node
