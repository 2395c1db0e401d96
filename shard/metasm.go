package shard

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"

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
)

// MetaStateMachine is the meta group's replica state: the TSO ceiling, the
// shard descriptors and the cluster's compaction revision. The state is
// small; it is kept in memory and written whole, with the applied index, in
// the batch of every update.
type MetaStateMachine struct {
	store *mvcc.Store
	lg    *zap.Logger

	mu      sync.RWMutex
	state   *basaltpb.MetaState
	applied uint64
}

var _ sm.IOnDiskStateMachine = (*MetaStateMachine)(nil)

// NewMetaStateMachine returns the meta group's state machine on store.
func NewMetaStateMachine(store *mvcc.Store, replicaID uint64, lg *zap.Logger) *MetaStateMachine {
	return &MetaStateMachine{
		store: store,
		lg:    lg.With(zap.Uint64("shard-id", MetaShardID), zap.Uint64("replica-id", replicaID)),
		state: &basaltpb.MetaState{},
	}
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
	m.mu.Lock()
	m.state, m.applied = state, applied
	m.mu.Unlock()
	return nil
}

// Update applies meta commands.
func (m *MetaStateMachine) Update(entries []sm.Entry) ([]sm.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := proto.Clone(m.state).(*basaltpb.MetaState)
	for i := range entries {
		var c basaltpb.MetaCommand
		if err := proto.Unmarshal(entries[i].Cmd, &c); err != nil {
			return nil, fmt.Errorf("shard: undecodable meta command at %d: %w", entries[i].Index, err)
		}
		switch c := c.Command.(type) {
		case *basaltpb.MetaCommand_SetTsoCeiling:
			next.TsoCeiling = c.SetTsoCeiling.Ceiling
		case *basaltpb.MetaCommand_PutShard:
			putShard(next, c.PutShard.Shard)
		case *basaltpb.MetaCommand_RecordCompaction:
			next.CompactRevision = max(next.CompactRevision, c.RecordCompaction.Revision)
		default:
			return nil, fmt.Errorf("shard: unknown meta command %T", c)
		}
		entries[i].Result = sm.Result{Value: 1}
	}
	data, err := proto.Marshal(next)
	if err != nil {
		return nil, err
	}
	applied := entries[len(entries)-1].Index
	b := m.store.NewMetaBatch()
	b.Set(MetaShardID, metaStateField, data)
	b.Set(MetaShardID, metaAppliedField, binary.BigEndian.AppendUint64(nil, applied))
	if err := b.Commit(); err != nil {
		return nil, err
	}
	m.state, m.applied = next, applied
	return entries, nil
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
