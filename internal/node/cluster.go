package node

import (
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/basaltdb/basalt/proto/basaltpb"
)

// parseInitialCluster parses etcd's --initial-cluster (name=peer-url,...; a
// name may repeat for a member with several peer URLs) into members with
// etcd's member ids, in the order of first appearance.
func parseInitialCluster(s, token string) ([]*basaltpb.Member, error) {
	var members []*basaltpb.Member
	for _, part := range strings.Split(s, ",") {
		name, u, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || name == "" || u == "" {
			return nil, fmt.Errorf("node: --initial-cluster: %q is not name=peer-url", part)
		}
		if _, err := hostPort(u); err != nil {
			return nil, err
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
		m.Id = memberID(m.PeerUrls, token)
		if other, dup := seen[m.Id]; dup {
			return nil, fmt.Errorf("node: --initial-cluster: members %q and %q have the same peer URLs", other, m.Name)
		}
		seen[m.Id] = m.Name
	}
	return members, nil
}

// memberID is etcd's member id: the first 8 bytes of the SHA-1 of the
// sorted peer URLs and the cluster token. Every member computes the same
// ids from the same --initial-cluster.
func memberID(peerURLs []string, token string) uint64 {
	urls := slices.Sorted(slices.Values(peerURLs))
	sum := sha1.Sum([]byte(strings.Join(urls, "") + token))
	return binary.BigEndian.Uint64(sum[:8])
}
