package shard

import (
	"errors"
	"fmt"
)

var (
	// ErrNoWrite is returned for a write transaction whose chosen branch
	// changes nothing: it takes no revision and is answered as a read.
	ErrNoWrite = errors.New("shard: transaction changes nothing")
	// ErrStaleRevision is returned when a write reached the log with a
	// revision that is not above the shard's: a deposed leader proposed it.
	ErrStaleRevision = errors.New("shard: stale revision")
	// ErrNotLeader is returned by a replica that does not lead its shard.
	ErrNotLeader = errors.New("shard: not the leader")
	// ErrLeaderChanged is returned for a write proposed by a leader that
	// lost its leadership before the write was applied: it may or may not
	// take effect.
	ErrLeaderChanged = errors.New("shard: leader changed")
	// ErrStopped is returned after the replica stopped.
	ErrStopped = errors.New("shard: stopped")
	// ErrBusy is returned when the sequencer's queue is full.
	ErrBusy = errors.New("shard: too many pending writes")
	// ErrLeaseExists is returned when a lease id is granted twice.
	ErrLeaseExists = errors.New("shard: lease already exists")
	// ErrMemberNotFound is returned when removing a member that is not in
	// the registry.
	ErrMemberNotFound = errors.New("shard: member not found")
	// ErrWrongShard is returned for a request with keys outside the
	// shard's span: the shard split, or the sender's descriptors are stale.
	// Nothing was done; the sender refreshes its descriptors and retries.
	ErrWrongShard = errors.New("shard: keys outside the shard's span")
)

// NotLeaderError is returned by a replica that does not lead its group. It
// names the leader, when one is known, so that the request can be sent
// there; it matches ErrNotLeader.
type NotLeaderError struct {
	ShardID uint64
	// Leader is the leader's replica id (its member id), 0 when unknown.
	Leader uint64
}

func (e *NotLeaderError) Error() string {
	return fmt.Sprintf("shard %d: not the leader (leader %x)", e.ShardID, e.Leader)
}

// Is makes a NotLeaderError match ErrNotLeader.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// LeaderElsewhere returns the leader a NotLeaderError in err's chain names,
// or 0 when err is not one or no leader is known.
func LeaderElsewhere(err error) uint64 {
	if nl, ok := errors.AsType[*NotLeaderError](err); ok {
		return nl.Leader
	}
	return 0
}

// Errors of membership changes (the Cluster API).
var (
	// ErrPeerURLExist is returned when adding a member whose peer URL
	// another member has.
	ErrPeerURLExist = errors.New("shard: peer URL already in use")
	// ErrMemberExist is returned when adding a member whose id is taken:
	// by a member, or by a removed member (ids are never reused).
	ErrMemberExist = errors.New("shard: member id already exists")
	// ErrMemberNotLearner is returned when promoting a voting member.
	ErrMemberNotLearner = errors.New("shard: member is not a learner")
	// ErrMemberBadURLs is returned for peer URLs that are not http://host:port.
	ErrMemberBadURLs = errors.New("shard: bad member URLs")
	// ErrRaftAddressChange is returned when an update would move a member's
	// Raft address, which its replicas are known by.
	ErrRaftAddressChange = errors.New("basalt: changing a member's first peer URL (its Raft address) is not supported; remove the member and add it again with new peer URLs")
)
