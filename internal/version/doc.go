// Package version holds Basalt's own version and the etcd version it
// reports to clients.
package version
