// Package testcluster starts clusters of Basalt nodes inside a test
// process: real Raft (dragonboat over an in-memory transport with a fault
// knob), real Pebble on disk, real gRPC on loopback ports. A test stops,
// restarts and cuts off nodes, and talks to them through clientv3.
package testcluster
