// Package proto holds the .proto sources of Basalt's internal messages: Raft
// commands of the data shards and the meta group, their results, the meta
// group's state, and the node-to-node Internal service. The generated Go
// code lives in proto/basaltpb (go generate ./proto; needs protoc).
//
// Invariants:
//   - Field numbers never change meaning: entries written by one version are
//     applied by the next.
//   - This package and basaltpb import nothing of Basalt's.
package proto
