package shard

import "errors"

var (
	// ErrNoWrite is returned for a write transaction whose chosen branch
	// changes nothing: it takes no revision and is answered as a read.
	ErrNoWrite = errors.New("shard: transaction changes nothing")
	// ErrStaleRevision is returned when a write reached the log with a
	// revision that is not above the shard's: a deposed leader proposed it.
	ErrStaleRevision = errors.New("shard: stale revision")
	// ErrNotLeader is returned by a replica that does not lead its shard.
	ErrNotLeader = errors.New("shard: not the leader")
	// ErrStopped is returned after the replica stopped.
	ErrStopped = errors.New("shard: stopped")
	// ErrBusy is returned when the sequencer's queue is full.
	ErrBusy = errors.New("shard: too many pending writes")
	// ErrLeaseExists is returned when a lease id is granted twice.
	ErrLeaseExists = errors.New("shard: lease already exists")
)
