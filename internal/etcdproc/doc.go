// Package etcdproc runs the real tools of etcd 3.7.3 that go.mod pins as
// tools: the etcd server (`go tool server`), the reference every behaviour
// and benchmark of Basalt is compared with, and etcdctl.
package etcdproc
