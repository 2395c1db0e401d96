// Package difftest is the oracle for "behaves as etcd": it sends the same
// requests to Basalt and to a real etcd 3.7.3 and compares the responses,
// revisions and errors included.
package difftest
