package shard

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	sm "github.com/lni/dragonboat/v4/statemachine"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/proto/basaltpb"
)

// MetaShardID is the Raft group that holds cluster metadata.
const MetaShardID = 1

// Metadata fields of the meta group in the store.
const (
	metaStateField   = "state"
	metaAppliedField = "applied"
	metaLeasePrefix  = "lease/" // + 8-byte lease id
)

// MetaStateMachine is the meta group's replica state: the TSO ceiling, the
// shard descriptors and the cluster's compaction revision (small, kept in
// memory and written whole when it changes), and the leases (one store key
// each, written when they change). Every update writes the applied index in
// the same batch.
type MetaStateMachine struct {
	store *mvcc.Store
	lg    *zap.Logger

	mu      sync.RWMutex
	state   *basaltpb.MetaState
	leases  map[int64]*basaltpb.Lease
	applied uint64
	// shardsGen counts changes of the shard descriptors, so that caches of
	// them (txncoord.RangeCache) notice one with an atomic load.
	shardsGen atomic.Uint64
}

var _ sm.IOnDiskStateMachine = (*MetaStateMachine)(nil)

// NewMetaStateMachine returns the meta group's state machine on store.
func NewMetaStateMachine(store *mvcc.Store, replicaID uint64, lg *zap.Logger) *MetaStateMachine {
	return &MetaStateMachine{
		store:  store,
		lg:     lg.With(zap.Uint64("shard-id", MetaShardID), zap.Uint64("replica-id", replicaID)),
		state:  &basaltpb.MetaState{},
		leases: make(map[int64]*basaltpb.Lease),
	}
}

// AppliedIndex returns the Raft index of the last entry applied.
func (m *MetaStateMachine) AppliedIndex() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.applied
}

// Open loads the state.
func (m *MetaStateMachine) Open(<-chan struct{}) (uint64, error) {
	if err := m.load(); err != nil {
		return 0, err
	}
	return m.applied, nil
}

func (m *MetaStateMachine) load() error {
	state := &basaltpb.MetaState{}
	if v, ok, err := m.store.GetMeta(MetaShardID, metaStateField); err != nil {
		return err
	} else if ok {
		if err := proto.Unmarshal(v, state); err != nil {
			return fmt.Errorf("shard: corrupt meta state: %w", err)
		}
	}
	var applied uint64
	if v, ok, err := m.store.GetMeta(MetaShardID, metaAppliedField); err != nil {
		return err
	} else if ok {
		applied = binary.BigEndian.Uint64(v)
	}
	leases := make(map[int64]*basaltpb.Lease)
	err := m.store.ScanMeta(MetaShardID, metaLeasePrefix, func(_ string, v []byte) error {
		l := &basaltpb.Lease{}
		if err := proto.Unmarshal(v, l); err != nil {
			return fmt.Errorf("shard: corrupt lease: %w", err)
		}
		leases[l.Id] = l
		return nil
	})
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.state, m.leases, m.applied = state, leases, applied
	m.mu.Unlock()
	m.shardsGen.Add(1)
	return nil
}

func leaseField(id int64) string {
	return metaLeasePrefix + string(binary.BigEndian.AppendUint64(nil, uint64(id)))
}

// Update applies meta commands. Results (MetaResult) say whether a lease
// command found what it needed.
func (m *MetaStateMachine) Update(entries []sm.Entry) ([]sm.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var next *basaltpb.MetaState // a copy, once the state changes
	state := func() *basaltpb.MetaState {
		if next == nil {
			next = proto.Clone(m.state).(*basaltpb.MetaState)
		}
		return next
	}
	dirty := make(map[int64]*basaltpb.Lease) // nil: deleted
	shardsChanged := false
	for i := range entries {
		var shardID uint64 // the result of AllocShardID
		var c basaltpb.MetaCommand
		if err := proto.Unmarshal(entries[i].Cmd, &c); err != nil {
			return nil, fmt.Errorf("shard: undecodable meta command at %d: %w", entries[i].Index, err)
		}
		code := basaltpb.ErrorCode_OK
		switch c := c.Command.(type) {
		case *basaltpb.MetaCommand_SetTsoCeiling:
			state().TsoCeiling = c.SetTsoCeiling.Ceiling
		case *basaltpb.MetaCommand_PutShard:
			putShard(state(), c.PutShard.Shard)
			shardsChanged = true
		case *basaltpb.MetaCommand_AllocShardId:
			st := state()
			for _, d := range st.Shards {
				st.LastShardId = max(st.LastShardId, d.ShardId)
			}
			st.LastShardId++
			shardID = st.LastShardId
		case *basaltpb.MetaCommand_RecordSplit:
			var changed bool
			code, changed = recordSplit(state(), c.RecordSplit)
			shardsChanged = shardsChanged || changed
		case *basaltpb.MetaCommand_RecordCompaction:
			st := state()
			st.CompactRevision = max(st.CompactRevision, c.RecordCompaction.Revision)
		case *basaltpb.MetaCommand_PutMember:
			putMember(state(), c.PutMember.Member)
		case *basaltpb.MetaCommand_RemoveMember:
			st := state()
			id := c.RemoveMember.Id
			if i := slices.IndexFunc(st.Members, func(m *basaltpb.Member) bool { return m.Id == id }); i >= 0 {
				st.Members = slices.Delete(st.Members, i, i+1)
				st.RemovedMembers = append(st.RemovedMembers, id)
			} else {
				code = basaltpb.ErrorCode_MEMBER_NOT_FOUND
			}
		case *basaltpb.MetaCommand_LeaseGrant:
			g := c.LeaseGrant
			if _, ok := m.leases[g.Id]; ok {
				code = basaltpb.ErrorCode_LEASE_EXISTS
				break
			}
			l := &basaltpb.Lease{Id: g.Id, Ttl: g.Ttl}
			m.leases[g.Id], dirty[g.Id] = l, l
		case *basaltpb.MetaCommand_LeaseRevoke:
			id := c.LeaseRevoke.Id
			if _, ok := m.leases[id]; !ok {
				code = basaltpb.ErrorCode_LEASE_NOT_FOUND
				break
			}
			delete(m.leases, id)
			dirty[id] = nil
		case *basaltpb.MetaCommand_LeaseCheckpoint:
			for _, cp := range c.LeaseCheckpoint.Leases {
				if l, ok := m.leases[cp.Id]; ok {
					l = &basaltpb.Lease{Id: l.Id, Ttl: l.Ttl, RemainingMs: cp.RemainingMs}
					m.leases[cp.Id], dirty[cp.Id] = l, l
				}
			}
		default:
			return nil, fmt.Errorf("shard: unknown meta command %T", c)
		}
		data, err := proto.Marshal(&basaltpb.MetaResult{Error: code, ShardId: shardID})
		if err != nil {
			return nil, err
		}
		entries[i].Result = sm.Result{Value: 1, Data: data}
	}
	applied := entries[len(entries)-1].Index
	b := m.store.NewMetaBatch()
	if next != nil {
		data, err := proto.Marshal(next)
		if err != nil {
			return nil, err
		}
		b.Set(MetaShardID, metaStateField, data)
	}
	for id, l := range dirty {
		if l == nil {
			b.Delete(MetaShardID, leaseField(id))
			continue
		}
		data, err := proto.Marshal(l)
		if err != nil {
			return nil, err
		}
		b.Set(MetaShardID, leaseField(id), data)
	}
	b.Set(MetaShardID, metaAppliedField, binary.BigEndian.AppendUint64(nil, applied))
	if err := b.Commit(); err != nil {
		return nil, err
	}
	if next != nil {
		m.state = next
	}
	m.applied = applied
	if shardsChanged {
		m.shardsGen.Add(1)
	}
	return entries, nil
}

// Lease returns a copy of a lease, or nil.
func (m *MetaStateMachine) Lease(id int64) *basaltpb.Lease {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if l, ok := m.leases[id]; ok {
		return proto.Clone(l).(*basaltpb.Lease)
	}
	return nil
}

// Leases returns copies of every lease.
func (m *MetaStateMachine) Leases() []*basaltpb.Lease {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]*basaltpb.Lease, 0, len(m.leases))
	for _, l := range m.leases {
		out = append(out, proto.Clone(l).(*basaltpb.Lease))
	}
	return out
}

// LeaseExists tells whether a lease exists (mvcc.LeaseChecker).
func (m *MetaStateMachine) LeaseExists(id int64) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.leases[id]
	return ok
}

// putMember creates or replaces a member, keeping members in id order. A
// member without client URLs (as the initial cluster lists it) keeps those
// it published.
func putMember(s *basaltpb.MetaState, m *basaltpb.Member) {
	i, found := slices.BinarySearchFunc(s.Members, m.Id, func(e *basaltpb.Member, id uint64) int { return cmp.Compare(e.Id, id) })
	if found {
		if len(m.ClientUrls) == 0 {
			m.ClientUrls = s.Members[i].ClientUrls
		}
		s.Members[i] = m
		return
	}
	s.Members = slices.Insert(s.Members, i, m)
}

func putShard(s *basaltpb.MetaState, d *basaltpb.ShardDescriptor) {
	for i, old := range s.Shards {
		if old.ShardId == d.ShardId {
			s.Shards[i] = d
			return
		}
	}
	s.Shards = append(s.Shards, d)
}

// recordSplit records a split the parent shard applied: the parent ends
// where the child starts, one epoch later, and the child is added. A split
// recorded before changes nothing; a parent that is unknown or does not hold
// the child's start is WRONG_SHARD.
func recordSplit(s *basaltpb.MetaState, r *basaltpb.RecordSplit) (code basaltpb.ErrorCode, changed bool) {
	child := r.Child
	if slices.ContainsFunc(s.Shards, func(d *basaltpb.ShardDescriptor) bool { return d.ShardId == child.ShardId }) {
		return basaltpb.ErrorCode_OK, false
	}
	i := slices.IndexFunc(s.Shards, func(d *basaltpb.ShardDescriptor) bool { return d.ShardId == r.ParentId })
	if i < 0 {
		return basaltpb.ErrorCode_WRONG_SHARD, false
	}
	parent := proto.Clone(s.Shards[i]).(*basaltpb.ShardDescriptor)
	inside := bytes.Compare(child.Start, parent.Start) > 0 && (len(parent.End) == 0 || bytes.Compare(child.Start, parent.End) < 0)
	if !inside || !bytes.Equal(child.End, parent.End) {
		return basaltpb.ErrorCode_WRONG_SHARD, false
	}
	parent.End = child.Start
	parent.Epoch++
	s.Shards[i] = parent
	s.Shards = append(s.Shards, child)
	s.LastShardId = max(s.LastShardId, child.ShardId)
	return basaltpb.ErrorCode_OK, true
}

// Shards returns the shard descriptors and the generation they belong to
// (ShardsGen), without copying: descriptors are replaced, never changed in
// place, so the caller may keep them; it must not change them.
func (m *MetaStateMachine) Shards() ([]*basaltpb.ShardDescriptor, uint64) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Clone(m.state.Shards), m.shardsGen.Load()
}

// ShardsGen returns a number that changes whenever the shard descriptors do.
func (m *MetaStateMachine) ShardsGen() uint64 { return m.shardsGen.Load() }

// Members returns the member registry in id order, without copying the
// rest of the state. Members are replaced, never changed in place, so the
// caller may keep them; it must not change them.
func (m *MetaStateMachine) Members() []*basaltpb.Member {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Clone(m.state.Members)
}

// Member returns the registry's member id (read-only, as Members), or nil.
func (m *MetaStateMachine) Member(id uint64) *basaltpb.Member {
	m.mu.RLock()
	defer m.mu.RUnlock()
	i, found := slices.BinarySearchFunc(m.state.Members, id, func(e *basaltpb.Member, id uint64) int { return cmp.Compare(e.Id, id) })
	if !found {
		return nil
	}
	return m.state.Members[i]
}

// State returns a copy of the applied state. Callers that need it
// linearizable read it after a ReadIndex on the meta group.
func (m *MetaStateMachine) State() *basaltpb.MetaState {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return proto.Clone(m.state).(*basaltpb.MetaState)
}

// Lookup returns a copy of the state.
func (m *MetaStateMachine) Lookup(any) (any, error) { return m.State(), nil }

// Sync makes applied entries durable.
func (m *MetaStateMachine) Sync() error { return m.store.Sync() }

// PrepareSnapshot pins the current state.
func (m *MetaStateMachine) PrepareSnapshot() (any, error) { return m.store.DB().NewSnapshot(), nil }

// SaveSnapshot streams the pinned state.
func (m *MetaStateMachine) SaveSnapshot(ctx any, w io.Writer, _ <-chan struct{}) error {
	snap := ctx.(*pebble.Snapshot)
	defer snap.Close()
	return m.store.WriteMetaSnapshot(MetaShardID, snap, w)
}

// RecoverFromSnapshot replaces the state with a snapshot's.
func (m *MetaStateMachine) RecoverFromSnapshot(r io.Reader, _ <-chan struct{}) error {
	if err := m.store.RecoverMetaSnapshot(MetaShardID, r); err != nil {
		return err
	}
	return m.load()
}

// Close releases nothing: the store belongs to the node.
func (m *MetaStateMachine) Close() error { return nil }

// EncodeMetaCommand marshals a meta command for proposal.
func EncodeMetaCommand(c *basaltpb.MetaCommand) ([]byte, error) {
	return proto.Marshal(c)
}

// RestoreMeta writes the meta group's state for a cluster restored from a
// backup (mvcc.RestoreBackup): the TSO goes on above rev, compaction is at
// compacted, and the backup's leases exist with their whole TTL. Members
// and shards are left to the new cluster's bootstrap.
func RestoreMeta(store *mvcc.Store, rev, compacted int64, leases []mvcc.BackupLease) error {
	// The TSO hands out revisions from the ceiling on.
	state, err := proto.Marshal(&basaltpb.MetaState{TsoCeiling: rev + 1, CompactRevision: max(compacted, 0)})
	if err != nil {
		return err
	}
	b := store.NewMetaBatch()
	b.Set(MetaShardID, metaStateField, state)
	for _, l := range leases {
		data, err := proto.Marshal(&basaltpb.Lease{Id: l.ID, Ttl: l.TTL})
		if err != nil {
			return err
		}
		b.Set(MetaShardID, leaseField(l.ID), data)
	}
	if err := b.Commit(); err != nil {
		return err
	}
	return store.Sync()
}
