package router

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/proto/basaltpb"
	"github.com/basaltdb/basalt/shard"
	"github.com/basaltdb/basalt/txncoord"
)

// Peers keeps one gRPC connection to each other member's client URL, for
// forwarding requests and for the Internal service.
type Peers struct {
	member func(id uint64) *basaltpb.Member

	mu    sync.Mutex
	conns map[uint64]peerConn
}

type peerConn struct {
	url  string // the client URL dialed
	conn *grpc.ClientConn
}

// errNoPeerURL is returned for a member that has not published its client
// URLs yet; the request is retried.
var errNoPeerURL = &shard.NotLeaderError{}

// NewPeers returns the connections to the members of the registry that
// member looks up.
func NewPeers(member func(id uint64) *basaltpb.Member) *Peers { return &Peers{member: member} }

// conn returns the connection to a member.
func (p *Peers) conn(id uint64) (*grpc.ClientConn, error) {
	m := p.member(id)
	if m == nil || len(m.ClientUrls) == 0 {
		return nil, errNoPeerURL
	}
	target := m.ClientUrls[0]
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[id]; ok && c.url == target {
		return c.conn, nil
	} else if ok {
		_ = c.conn.Close() // the member published another URL
	}
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("router: member %x: %w", id, err)
	}
	conn, err := grpc.NewClient(u.Host,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.MaxCallSendMsgSize(math.MaxInt32)))
	if err != nil {
		return nil, err
	}
	if p.conns == nil {
		p.conns = make(map[uint64]peerConn)
	}
	p.conns[id] = peerConn{url: target, conn: conn}
	return conn, nil
}

// Internal returns the Internal service of a member.
func (p *Peers) Internal(id uint64) (basaltpb.InternalClient, error) {
	conn, err := p.conn(id)
	if err != nil {
		return nil, err
	}
	return basaltpb.NewInternalClient(conn), nil
}

// Close closes every connection.
func (p *Peers) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.conn.Close()
	}
	p.conns = nil
}

// forwardedKey marks, in gRPC metadata, a request that a member forwarded
// to the leader: the leader answers it itself or fails, never forwards it
// again.
const forwardedKey = "basalt-forwarded"

func isForwarded(ctx context.Context) bool { return hasMetadata(ctx, forwardedKey) }

// forwarded returns ctx marked for a request relayed to the leader over
// gRPC.
func forwarded(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, forwardedKey, "1")
}

// hasMetadata tells whether the incoming call carries key. Unlike
// metadata.FromIncomingContext, it copies nothing.
func hasMetadata(ctx context.Context, key string) bool {
	return len(metadata.ValueFromIncomingContext(ctx, key)) > 0
}

// routed runs a request here, or, when here names a leader on another
// member (shard.NotLeaderError), sends it there (there). It retries while
// the leader is unknown or moving, for as long as txncoord.RetryTimeout: a
// write only when it is certain not to have been applied (the leader
// answered "no leader", or the connection was never made). A there that
// relays the request over conn sends it with forwarded(ctx); writes that go
// through the write forwarder need no mark, as Internal.Write never
// forwards.
func routed[Resp any](s *Server, ctx context.Context, write bool, here func() (Resp, error), there func(ctx context.Context, leader uint64, conn *grpc.ClientConn) (Resp, error)) (Resp, error) {
	var (
		deadline time.Time
		backoff  = time.Millisecond
	)
	for {
		resp, err := here()
		leader := shard.LeaderElsewhere(err)
		if leader == 0 || isForwarded(ctx) {
			return resp, err
		}
		conn, err := s.peers.conn(leader)
		if err == nil {
			resp, err = there(ctx, leader, conn)
			if err == nil || !retryableRemote(err, write) {
				return resp, err
			}
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(txncoord.RetryTimeout)
		} else if time.Now().After(deadline) {
			return resp, err
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return resp, err
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// retryableRemote tells whether a forwarded request may be sent again.
func retryableRemote(err error, write bool) bool {
	if errors.Is(err, shard.ErrNotLeader) {
		return true // no connection was made
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	desc := st.Message()
	return !write || desc == rpctypes.ErrorDesc(rpctypes.ErrGRPCNoLeader) ||
		strings.Contains(desc, "while dialing")
}
