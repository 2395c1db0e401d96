package testcluster

import (
	"context"
	"errors"
	"net"
	"sync"

	"github.com/lni/dragonboat/v4/config"
	chantransport "github.com/lni/dragonboat/v4/plugin/chan"
	"github.com/lni/dragonboat/v4/raftio"
	raftpb "github.com/lni/dragonboat/v4/raftpb"
)

// faults is a Raft transport shared by a cluster's nodes that can cut a
// node off: every message to or from a cut node's Raft address is dropped,
// as a network partition would.
type faults struct {
	mu  sync.Mutex
	cut map[string]bool
}

func (f *faults) setCut(addr string, cut bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cut == nil {
		f.cut = make(map[string]bool)
	}
	f.cut[addr] = cut
}

func (f *faults) isCut(addrs ...string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range addrs {
		if f.cut[a] {
			return true
		}
	}
	return false
}

// errCut is what sending over a cut link returns.
var errCut = errors.New("testcluster: link cut")

// transportFactory makes a node's transport.
type transportFactory struct{ f *faults }

func (t transportFactory) Create(nhc config.NodeHostConfig, h raftio.MessageHandler, ch raftio.ChunkHandler) raftio.ITransport {
	self := nhc.RaftAddress
	in := func(b raftpb.MessageBatch) {
		if !t.f.isCut(self, b.SourceAddress) {
			h(b)
		}
	}
	inChunk := func(c raftpb.Chunk) bool {
		if t.f.isCut(self) {
			return false
		}
		return ch(c)
	}
	inner := (&chantransport.ChanTransportFactory{}).Create(nhc, in, inChunk)
	return &transport{ITransport: inner, f: t.f, self: self}
}

func (transportFactory) Validate(addr string) bool {
	_, _, err := net.SplitHostPort(addr)
	return err == nil
}

type transport struct {
	raftio.ITransport
	f    *faults
	self string
}

func (t *transport) GetConnection(ctx context.Context, target string) (raftio.IConnection, error) {
	if t.f.isCut(t.self, target) {
		return nil, errCut
	}
	c, err := t.ITransport.GetConnection(ctx, target)
	if err != nil {
		return nil, err
	}
	return &connection{IConnection: c, f: t.f, self: t.self, target: target}, nil
}

func (t *transport) GetSnapshotConnection(ctx context.Context, target string) (raftio.ISnapshotConnection, error) {
	if t.f.isCut(t.self, target) {
		return nil, errCut
	}
	return t.ITransport.GetSnapshotConnection(ctx, target)
}

type connection struct {
	raftio.IConnection
	f            *faults
	self, target string
}

func (c *connection) SendMessageBatch(b raftpb.MessageBatch) error {
	if c.f.isCut(c.self, c.target) {
		return errCut
	}
	return c.IConnection.SendMessageBatch(b)
}
