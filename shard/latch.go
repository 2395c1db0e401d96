package shard

import (
	"bytes"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// span is a key or a key range: end nil is the single key start, end empty
// (non-nil) is every key from start on, as etcd's "\x00".
type span struct {
	start, end []byte
}

func makeSpan(key, rangeEnd []byte) span {
	switch {
	case len(rangeEnd) == 0:
		return span{start: key}
	case len(rangeEnd) == 1 && rangeEnd[0] == 0:
		return span{start: key, end: []byte{}}
	}
	return span{start: key, end: rangeEnd}
}

// contains reports whether key is in s.
func (s span) contains(key []byte) bool {
	if s.end == nil {
		return bytes.Equal(key, s.start)
	}
	return bytes.Compare(key, s.start) >= 0 && (len(s.end) == 0 || bytes.Compare(key, s.end) < 0)
}

func (s span) overlaps(o span) bool {
	if s.end == nil {
		return o.contains(s.start)
	}
	if o.end == nil {
		return s.contains(o.start)
	}
	// Two ranges overlap when each starts before the other ends.
	return (len(o.end) == 0 || bytes.Compare(s.start, o.end) < 0) &&
		(len(s.end) == 0 || bytes.Compare(o.start, s.end) < 0)
}

// latchSet holds the spans of writes that are proposed but not applied, or
// of requests waiting their turn, and the leases whose key sets they change.
// Spans and leases are counted: the same one may be held several times.
type latchSet struct {
	points map[string]int
	ranges []span
	leases map[int64]int
}

func newLatchSet() *latchSet {
	return &latchSet{points: make(map[string]int), leases: make(map[int64]int)}
}

// reset empties the set, keeping its room.
func (l *latchSet) reset() {
	clear(l.points)
	clear(l.ranges)
	l.ranges = l.ranges[:0]
	clear(l.leases)
}

// holdWrites holds what a write changes: its spans and leases.
func (l *latchSet) holdWrites(sh *txnShape) {
	l.add(sh.writes)
	for _, id := range sh.leaseWrites {
		l.leases[id]++
	}
}

// releaseWrites releases what holdWrites held.
func (l *latchSet) releaseWrites(sh *txnShape) {
	l.remove(sh.writes)
	for _, id := range sh.leaseWrites {
		if l.leases[id]--; l.leases[id] <= 0 {
			delete(l.leases, id)
		}
	}
}

// holdAll holds everything a write reads or changes.
func (l *latchSet) holdAll(sh *txnShape) {
	l.add(sh.reads)
	l.holdWrites(sh)
	for _, id := range sh.leaseReads {
		l.leases[id]++
	}
}

// conflictsWithReads reports whether held latches cover what a write reads.
func (l *latchSet) conflictsWithReads(sh *txnShape) bool {
	if l.overlaps(sh.reads) {
		return true
	}
	for _, id := range sh.leaseReads {
		if l.leases[id] > 0 {
			return true
		}
	}
	return false
}

// conflictsWithAny reports whether held latches cover anything a write
// reads or changes.
func (l *latchSet) conflictsWithAny(sh *txnShape) bool {
	if l.conflictsWithReads(sh) || l.overlaps(sh.writes) {
		return true
	}
	for _, id := range sh.leaseWrites {
		if l.leases[id] > 0 {
			return true
		}
	}
	return false
}

func (l *latchSet) add(spans []span) {
	for _, s := range spans {
		if s.end == nil {
			l.points[string(s.start)]++
		} else {
			l.ranges = append(l.ranges, s)
		}
	}
}

func (l *latchSet) remove(spans []span) {
	for _, s := range spans {
		if s.end == nil {
			k := string(s.start)
			if l.points[k]--; l.points[k] <= 0 {
				delete(l.points, k)
			}
			continue
		}
		for i, r := range l.ranges {
			if bytes.Equal(r.start, s.start) && bytes.Equal(r.end, s.end) && (r.end == nil) == (s.end == nil) {
				l.ranges[i] = l.ranges[len(l.ranges)-1]
				l.ranges = l.ranges[:len(l.ranges)-1]
				break
			}
		}
	}
}

func (l *latchSet) overlaps(spans []span) bool {
	for _, s := range spans {
		for _, r := range l.ranges {
			if r.overlaps(s) {
				return true
			}
		}
		if s.end == nil {
			if l.points[string(s.start)] > 0 {
				return true
			}
			continue
		}
		for k := range l.points {
			if s.contains([]byte(k)) {
				return true
			}
		}
	}
	return false
}

func (l *latchSet) empty() bool {
	return len(l.points) == 0 && len(l.ranges) == 0 && len(l.leases) == 0
}

// txnShape is what the sequencer needs to know of a write transaction
// before it runs it: the spans its outcome depends on, the spans it may
// write, the leases whose key sets it reads or changes, and whether its
// outcome (which branch, whether it writes, whether it fails) depends on
// stored state at all.
//
// A put with a lease changes the lease's key set; revoking a lease reads
// it. So a revocation waits for the puts sequenced before it, and a put
// sequenced after it waits and then finds the lease gone.
type txnShape struct {
	reads       []span
	writes      []span
	leaseReads  []int64
	leaseWrites []int64
	conditional bool
	// readRev is the highest explicit revision a range of the transaction
	// reads at.
	readRev int64
}

// shapeOf walks every branch of rt, nested transactions included. A
// transaction without compares always takes its success branches; when
// those put nothing it changes nothing, which evaluation finds out, so it
// counts as conditional too.
func shapeOf(rt *pb.TxnRequest) txnShape {
	var s txnShape
	s.walk(rt)
	if !s.conditional && !successPuts(rt) {
		s.conditional = true
	}
	return s
}

// successPuts reports whether the success branches of rt put a key.
func successPuts(rt *pb.TxnRequest) bool {
	for _, op := range rt.Success {
		switch tv := op.Request.(type) {
		case *pb.RequestOp_RequestPut:
			return true
		case *pb.RequestOp_RequestTxn:
			if successPuts(tv.RequestTxn) {
				return true
			}
		}
	}
	return false
}

func (s *txnShape) walk(rt *pb.TxnRequest) {
	for _, c := range rt.Compare {
		s.conditional = true
		s.reads = append(s.reads, makeSpan(c.Key, c.RangeEnd))
	}
	for _, branch := range [][]*pb.RequestOp{rt.Success, rt.Failure} {
		for _, op := range branch {
			switch tv := op.Request.(type) {
			case *pb.RequestOp_RequestPut:
				p := tv.RequestPut
				sp := makeSpan(p.Key, nil)
				s.writes = append(s.writes, sp)
				if p.IgnoreValue || p.IgnoreLease {
					s.conditional = true
					s.reads = append(s.reads, sp)
				}
				if p.Lease != 0 {
					// Whether the lease exists is checked before a revision
					// is taken, so a missing lease leaves no gap.
					s.conditional = true
					s.leaseReads = append(s.leaseReads, p.Lease)
					s.leaseWrites = append(s.leaseWrites, p.Lease)
				}
			case *pb.RequestOp_RequestDeleteRange:
				d := tv.RequestDeleteRange
				sp := makeSpan(d.Key, d.RangeEnd)
				s.conditional = true
				s.reads = append(s.reads, sp)
				s.writes = append(s.writes, sp)
			case *pb.RequestOp_RequestRange:
				// A read at an explicit revision may fail as future or
				// compacted: that depends on the shard's revisions.
				if tv.RequestRange.Revision != 0 {
					s.conditional = true
					s.readRev = max(s.readRev, tv.RequestRange.Revision)
				}
			case *pb.RequestOp_RequestTxn:
				s.walk(tv.RequestTxn)
			}
		}
	}
}
