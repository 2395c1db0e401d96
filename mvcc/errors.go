package mvcc

import "errors"

// Errors a read or a transaction returns for its input. The router turns each
// into etcd's gRPC error.
var (
	ErrCompacted     = errors.New("mvcc: required revision has been compacted")
	ErrFutureRev     = errors.New("mvcc: required revision is a future revision")
	ErrKeyNotFound   = errors.New("mvcc: key not found")
	ErrLeaseNotFound = errors.New("mvcc: requested lease not found")
	// ErrTxnWrites is returned by ReadTxn when the transaction's chosen path
	// changes something and so needs a revision.
	ErrTxnWrites = errors.New("mvcc: transaction writes")
)

// Errors of splits and of reads across shards.
var (
	// ErrBadSplitKey is returned for a split key outside the shard's span
	// or at its start (the shard would be left empty).
	ErrBadSplitKey = errors.New("mvcc: split key is not inside the shard's span")
	// ErrNotAdjacent is returned for a view over shards that do not follow
	// one another in key order.
	ErrNotAdjacent = errors.New("mvcc: shards are not adjacent")
)
