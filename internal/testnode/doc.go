// Package testnode starts Basalt nodes inside a test process: real Raft,
// real Pebble on disk in the test's temporary directory, real gRPC on
// loopback ports, with short Raft timings.
package testnode
