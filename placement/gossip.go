package placement

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Gossip is this node's membership in the cluster's memberlist gossip: it
// tells other nodes (and nodes that join) where this member serves clients,
// and notices nodes that fail.
type Gossip struct {
	list *memberlist.Memberlist
	lg   *zap.Logger
}

// GossipMeta is what a node tells the others about itself.
type GossipMeta struct {
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peer_urls"`
	ClientURLs []string `json:"client_urls"`
}

type gossipDelegate struct{ meta []byte }

func (d gossipDelegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}
func (gossipDelegate) NotifyMsg([]byte)                    {}
func (gossipDelegate) GetBroadcasts(int, int) [][]byte     { return nil }
func (gossipDelegate) LocalState(bool) []byte              { return nil }
func (gossipDelegate) MergeRemoteState(buf []byte, _ bool) {}

// StartGossip joins the gossip on addr (host:port, TCP and UDP) as node name.
func StartGossip(addr string, meta GossipMeta, lg *zap.Logger) (*Gossip, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("placement: gossip address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("placement: gossip address %q: %w", addr, err)
	}
	data, err := json.Marshal(meta)
	if err != nil {
		return nil, err
	}
	cfg := memberlist.DefaultLANConfig()
	cfg.Name = meta.Name + "@" + addr // unique even when names repeat
	cfg.BindAddr, cfg.BindPort = host, port
	cfg.AdvertiseAddr, cfg.AdvertisePort = host, port
	cfg.Delegate = gossipDelegate{meta: data}
	cfg.Logger = log.New(io.Discard, "", 0)
	list, err := memberlist.Create(cfg)
	if err != nil {
		return nil, fmt.Errorf("placement: start gossip: %w", err)
	}
	return &Gossip{list: list, lg: lg}, nil
}

// Join contacts the gossip of a running cluster's member at addr.
func (g *Gossip) Join(addr string) error {
	if _, err := g.list.Join([]string{addr}); err != nil {
		return fmt.Errorf("placement: join the gossip at %s: %w", addr, err)
	}
	return nil
}

// Others returns what the other live nodes told of themselves.
func (g *Gossip) Others() []GossipMeta {
	var out []GossipMeta
	for _, n := range g.list.Members() {
		if n.Name == g.list.LocalNode().Name {
			continue
		}
		var m GossipMeta
		if json.Unmarshal(n.Meta, &m) == nil && len(m.ClientURLs) > 0 {
			out = append(out, m)
		}
	}
	return out
}

// Close leaves the gossip.
func (g *Gossip) Close() {
	_ = g.list.Leave(time.Second)
	_ = g.list.Shutdown()
}

// JoinCluster makes this node a member of the cluster it found through the
// gossip: it asks a member that serves clients to add it (MemberAdd, as a
// voter) unless the registry already has its peer URLs (a restart, or an
// earlier attempt), and returns its member id.
func (g *Gossip) JoinCluster(ctx context.Context, peerURLs []string) (uint64, error) {
	var lastErr error = errors.New("no member of the cluster is known yet")
	for {
		for _, m := range g.Others() {
			id, err := addSelf(ctx, m.ClientURLs, peerURLs)
			if err == nil {
				return id, nil
			}
			lastErr = err
			g.lg.Info("join-cluster-retry", zap.Strings("through", m.ClientURLs), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("placement: join the cluster: %w (last: %v)", ctx.Err(), lastErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func addSelf(ctx context.Context, endpoints, peerURLs []string) (uint64, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ml, err := cli.MemberList(ctx)
	if err != nil {
		return 0, err
	}
	for _, m := range ml.Members {
		if slices.Equal(m.PeerURLs, peerURLs) {
			return m.ID, nil
		}
	}
	resp, err := cli.MemberAdd(ctx, peerURLs)
	if err != nil {
		return 0, err
	}
	return resp.Member.ID, nil
}
