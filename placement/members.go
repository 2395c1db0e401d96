package placement

import (
	"context"
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/basaltpb"
	"github.com/basaltdb/basalt/shard"
)

// ParseInitialCluster parses etcd's --initial-cluster (name=peer-url,...; a
// name may repeat for a member with several peer URLs) into members with
// etcd's member ids, in the order of first appearance.
func ParseInitialCluster(s, token string) ([]*basaltpb.Member, error) {
	var members []*basaltpb.Member
	for _, part := range strings.Split(s, ",") {
		name, u, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || name == "" || u == "" {
			return nil, fmt.Errorf("placement: --initial-cluster: %q is not name=peer-url", part)
		}
		if _, err := RaftAddress(&basaltpb.Member{PeerUrls: []string{u}}); err != nil {
			return nil, fmt.Errorf("placement: --initial-cluster: %w", err)
		}
		i := slices.IndexFunc(members, func(m *basaltpb.Member) bool { return m.Name == name })
		if i < 0 {
			members = append(members, &basaltpb.Member{Name: name})
			i = len(members) - 1
		}
		members[i].PeerUrls = append(members[i].PeerUrls, u)
	}
	seen := make(map[uint64]string)
	for _, m := range members {
		m.Id = MemberID(m.PeerUrls, token)
		if other, dup := seen[m.Id]; dup {
			return nil, fmt.Errorf("placement: --initial-cluster: members %q and %q have the same peer URLs", other, m.Name)
		}
		seen[m.Id] = m.Name
	}
	return members, nil
}

// MemberID is etcd's member id of a new cluster's member: the first 8
// bytes of the SHA-1 of the sorted peer URLs and the cluster token. Every
// member computes the same ids from the same --initial-cluster, and a
// member added later (MemberAdd) gets the id of its peer URLs the same
// way, so that it knows its id when it starts.
func MemberID(peerURLs []string, token string) uint64 {
	urls := slices.Sorted(slices.Values(peerURLs))
	sum := sha1.Sum([]byte(strings.Join(urls, "") + token))
	return binary.BigEndian.Uint64(sum[:8])
}

// membershipTimeout bounds one membership change of one group.
const membershipTimeout = 10 * time.Second

// ReplicationFactor is how many voting members hold a replica of every
// data shard and vote in the meta group. A voting member added beyond it
// is a gateway: it holds a non-voting replica of the meta group only, and
// relays its clients' requests to a member that holds the data (router).
// When a member that holds the data is removed, a gateway takes its place.
// Every data shard has the same replicas: a split's child starts on its
// parent's.
const ReplicationFactor = 3

// dataHolders returns the members listed as replicas of the data shards.
func dataHolders(state *basaltpb.MetaState) map[uint64]string {
	if len(state.Shards) == 0 {
		return nil
	}
	return state.Shards[0].Replicas
}

// votingDataHolders counts the voting members that hold the data.
func votingDataHolders(state *basaltpb.MetaState) int {
	n := 0
	for id := range dataHolders(state) {
		if m := findMember(state, id); m != nil && !m.IsLearner {
			n++
		}
	}
	return n
}

// IsGateway tells whether this member holds no replica of the data shards
// by the meta state it has applied.
func (h *Host) IsGateway() bool {
	descs, _ := h.meta.Shards()
	if len(descs) == 0 {
		return false
	}
	_, ok := descs[0].Replicas[h.replicaID]
	return !ok
}

// AddMember adds a member with peerURLs (a learner, or a voter) to the
// registry, and as a non-voting replica to every group: the meta group and
// each data shard. The new node is then started with
// --initial-cluster-state existing and joins them; a voter promotes its
// replicas once started (PromoteSelf), so that a member that never starts
// does not count against the quorum. A voter added when ReplicationFactor
// voting members hold the data is a gateway: it joins the meta group only,
// and stays a non-voting replica there.
func (h *Host) AddMember(ctx context.Context, peerURLs []string, learner bool) (*basaltpb.Member, error) {
	m := &basaltpb.Member{PeerUrls: peerURLs, IsLearner: learner}
	addr, err := RaftAddress(m)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", shard.ErrMemberBadURLs, err)
	}
	for _, u := range peerURLs[1:] {
		if _, err := RaftAddress(&basaltpb.Member{PeerUrls: []string{u}}); err != nil {
			return nil, fmt.Errorf("%w: %v", shard.ErrMemberBadURLs, err)
		}
	}
	state, err := h.MetaGroup().ReadState(ctx)
	if err != nil {
		return nil, err
	}
	m.Id = MemberID(peerURLs, h.cfg.ClusterToken)
	for _, o := range state.Members {
		for _, u := range o.PeerUrls {
			if slices.Contains(peerURLs, u) {
				return nil, shard.ErrPeerURLExist
			}
		}
	}
	if findMember(state, m.Id) != nil || slices.Contains(state.RemovedMembers, m.Id) {
		return nil, shard.ErrMemberExist
	}
	gateway := !learner && votingDataHolders(state) >= ReplicationFactor
	groups := state
	if gateway {
		groups = &basaltpb.MetaState{} // the meta group alone
	}
	err = h.eachGroup(ctx, groups, func(ctx context.Context, group uint64) error {
		return h.nh.SyncRequestAddNonVoting(ctx, group, m.Id, addr, 0)
	})
	if err != nil {
		return nil, err
	}
	if err := h.proposeMember(ctx, m); err != nil {
		return nil, err
	}
	if gateway {
		return m, nil
	}
	return m, h.setReplica(ctx, state, m.Id, addr)
}

// PromoteMember makes a learner a voting member of every group.
func (h *Host) PromoteMember(ctx context.Context, id uint64) error {
	state, err := h.MetaGroup().ReadState(ctx)
	if err != nil {
		return err
	}
	m := findMember(state, id)
	switch {
	case m == nil:
		return shard.ErrMemberNotFound
	case !m.IsLearner:
		return shard.ErrMemberNotLearner
	}
	addr, err := RaftAddress(m)
	if err != nil {
		return err
	}
	err = h.eachGroup(ctx, state, func(ctx context.Context, group uint64) error {
		return h.nh.SyncRequestAddReplica(ctx, group, id, addr, 0) // promotes the non-voting replica
	})
	if err != nil {
		return err
	}
	promoted := proto.Clone(m).(*basaltpb.Member)
	promoted.IsLearner = false
	return h.proposeMember(ctx, promoted)
}

// PromoteSelf promotes this node's replicas to voters when it joined as a
// voting member (not a learner).
func (h *Host) PromoteSelf(ctx context.Context) error {
	if !h.joining {
		return nil
	}
	state, err := h.MetaGroup().ReadState(ctx)
	if err != nil {
		return err
	}
	if m := findMember(state, h.replicaID); m == nil || m.IsLearner {
		return nil
	}
	if _, holds := dataHolders(state)[h.replicaID]; !holds {
		return nil // a gateway: a non-voting replica of the meta group
	}
	return h.eachGroup(ctx, state, func(ctx context.Context, group uint64) error {
		return h.nh.SyncRequestAddReplica(ctx, group, h.replicaID, h.cfg.RaftAddress, 0)
	})
}

// SyncMembers returns once this node's registry has every change committed
// before the call.
func (h *Host) SyncMembers(ctx context.Context) error { return h.MetaGroup().Sync(ctx) }

// PublishSelf records this member's name and client URLs in the registry,
// keeping what else is recorded of it (a learner stays one).
func (h *Host) PublishSelf(ctx context.Context, name string, clientURLs []string) error {
	state, err := h.MetaGroup().ReadState(ctx)
	if err != nil {
		return err
	}
	m := &basaltpb.Member{Id: h.replicaID, PeerUrls: []string{"http://" + h.cfg.RaftAddress}}
	if old := findMember(state, h.replicaID); old != nil {
		m = proto.Clone(old).(*basaltpb.Member)
	}
	m.Name, m.ClientUrls = name, clientURLs
	return h.proposeMember(ctx, m)
}

// RemoveMember removes a member from every group and from the registry;
// its id is never used again. When it held the data and a gateway is left,
// the gateway takes its place (replace).
func (h *Host) RemoveMember(ctx context.Context, id uint64) error {
	state, err := h.MetaGroup().ReadState(ctx)
	if err != nil {
		return err
	}
	m := findMember(state, id)
	if m == nil {
		return shard.ErrMemberNotFound
	}
	groups := state
	_, held := dataHolders(state)[id]
	if !held {
		groups = &basaltpb.MetaState{} // a gateway holds the meta group's replica only
	}
	err = h.eachGroup(ctx, groups, func(ctx context.Context, group uint64) error {
		return h.nh.SyncRequestDeleteReplica(ctx, group, id, 0)
	})
	if err != nil {
		return err
	}
	if held {
		if err := h.setReplica(ctx, state, id, ""); err != nil {
			return err
		}
	}
	if err := h.MetaGroup().Propose(ctx, &basaltpb.MetaCommand{Command: &basaltpb.MetaCommand_RemoveMember{RemoveMember: &basaltpb.RemoveMember{Id: id}}}); err != nil {
		return err
	}
	if !held || m.IsLearner {
		return nil
	}
	return h.replace(ctx)
}

// replace makes a gateway a voting replica of every group while fewer than
// ReplicationFactor voting members hold the data: it adds the gateway to
// each data shard as a non-voting replica, lists it in the shards'
// descriptors, and promotes it in every group. The gateway sees
// itself listed and starts its replicas, which catch up from the others
// (keepReplicas).
func (h *Host) replace(ctx context.Context) error {
	state, err := h.MetaGroup().ReadState(ctx)
	if err != nil {
		return err
	}
	if votingDataHolders(state) >= ReplicationFactor {
		return nil
	}
	holders := dataHolders(state)
	var gw *basaltpb.Member
	for _, m := range state.Members {
		if _, holds := holders[m.Id]; !holds && !m.IsLearner && (gw == nil || m.Id < gw.Id) {
			gw = m
		}
	}
	if gw == nil {
		return nil // no gateway left: the groups run with fewer replicas
	}
	addr, err := RaftAddress(gw)
	if err != nil {
		return err
	}
	err = h.eachDataShard(ctx, state, func(ctx context.Context, group uint64) error {
		return h.nh.SyncRequestAddNonVoting(ctx, group, gw.Id, addr, 0)
	})
	if err != nil {
		return err
	}
	if err := h.setReplica(ctx, state, gw.Id, addr); err != nil {
		return err
	}
	h.lg.Info("replace-member", zap.String("gateway", fmt.Sprintf("%x", gw.Id)))
	return h.eachGroup(ctx, state, func(ctx context.Context, group uint64) error {
		return h.nh.SyncRequestAddReplica(ctx, group, gw.Id, addr, 0) // promotes the non-voting replica
	})
}

// UpdateMember changes a member's peer URLs. Its first peer URL is its
// Raft address, by which its replicas are known: that one cannot change.
func (h *Host) UpdateMember(ctx context.Context, id uint64, peerURLs []string) error {
	state, err := h.MetaGroup().ReadState(ctx)
	if err != nil {
		return err
	}
	m := findMember(state, id)
	if m == nil {
		return shard.ErrMemberNotFound
	}
	updated := proto.Clone(m).(*basaltpb.Member)
	updated.PeerUrls = peerURLs
	addr, err := RaftAddress(updated)
	if err != nil {
		return fmt.Errorf("%w: %v", shard.ErrMemberBadURLs, err)
	}
	if old, _ := RaftAddress(m); old != addr {
		return shard.ErrRaftAddressChange
	}
	for _, o := range state.Members {
		if o.Id == id {
			continue
		}
		for _, u := range o.PeerUrls {
			if slices.Contains(peerURLs, u) {
				return shard.ErrPeerURLExist
			}
		}
	}
	return h.proposeMember(ctx, updated)
}

func findMember(state *basaltpb.MetaState, id uint64) *basaltpb.Member {
	if i := slices.IndexFunc(state.Members, func(m *basaltpb.Member) bool { return m.Id == id }); i >= 0 {
		return state.Members[i]
	}
	return nil
}

func (h *Host) proposeMember(ctx context.Context, m *basaltpb.Member) error {
	return h.MetaGroup().Propose(ctx, &basaltpb.MetaCommand{Command: &basaltpb.MetaCommand_PutMember{PutMember: &basaltpb.PutMember{Member: m}}})
}

// eachGroup runs a membership change on the meta group and every data
// shard of state, retrying while a group has no leader.
func (h *Host) eachGroup(ctx context.Context, state *basaltpb.MetaState, change func(context.Context, uint64) error) error {
	if err := h.changeGroups(ctx, []uint64{shard.MetaShardID}, change); err != nil {
		return err
	}
	return h.eachDataShard(ctx, state, change)
}

// eachDataShard runs a membership change on every data shard of state.
func (h *Host) eachDataShard(ctx context.Context, state *basaltpb.MetaState, change func(context.Context, uint64) error) error {
	groups := make([]uint64, 0, len(state.Shards))
	for _, d := range state.Shards {
		groups = append(groups, d.ShardId)
	}
	return h.changeGroups(ctx, groups, change)
}

func (h *Host) changeGroups(ctx context.Context, groups []uint64, change func(context.Context, uint64) error) error {
	for _, g := range groups {
		err := retryDropped(ctx, func() error {
			cctx, cancel := context.WithTimeout(ctx, membershipTimeout)
			defer cancel()
			return change(cctx, g)
		})
		if err != nil {
			return fmt.Errorf("placement: membership change of group %d: %w", g, err)
		}
	}
	return nil
}

// setReplica records (addr set) or drops (addr empty) a member's replica in
// every data shard's descriptor.
func (h *Host) setReplica(ctx context.Context, state *basaltpb.MetaState, id uint64, addr string) error {
	for _, d := range state.Shards {
		d = proto.Clone(d).(*basaltpb.ShardDescriptor)
		if addr == "" {
			delete(d.Replicas, id)
		} else {
			d.Replicas[id] = addr
		}
		d.Epoch++
		if err := h.MetaGroup().Propose(ctx, &basaltpb.MetaCommand{Command: &basaltpb.MetaCommand_PutShard{PutShard: &basaltpb.PutShard{Shard: d}}}); err != nil {
			return err
		}
	}
	return nil
}
