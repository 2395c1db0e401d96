package difftest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/basaltdb/basalt/internal/etcdproc"
)

// Target is one side of a comparison: the gRPC clients of one server.
type Target struct {
	KV          pb.KVClient
	Lease       pb.LeaseClient
	Maintenance pb.MaintenanceClient
	conn        *grpc.ClientConn
}

// Dial connects to a server's client address (host:port).
func Dial(t testing.TB, addr string) *Target {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &Target{KV: pb.NewKVClient(conn), Lease: pb.NewLeaseClient(conn), Maintenance: pb.NewMaintenanceClient(conn), conn: conn}
}

// StartEtcd starts a real etcd 3.7.3 for the test and returns its client
// address.
func StartEtcd(t testing.TB, extra ...string) string {
	t.Helper()
	client, err := etcdproc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	peer, err := etcdproc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := etcdproc.Start(ctx, etcdproc.Options{Dir: t.TempDir(), ClientAddr: client, PeerAddr: peer, Extra: extra})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return client
}

// Call is one request, sent the same way to each side.
type Call struct {
	Name string
	Do   func(ctx context.Context, t *Target) (proto.Message, error)
}

// Pair compares Basalt with etcd, request by request.
type Pair struct {
	t      testing.TB
	Etcd   *Target
	Basalt *Target
	diffs  []string
	// Rev is etcd's revision after the last successful call.
	Rev int64
	// compactedAt holds the revisions compacted at so far.
	compactedAt map[int64]bool
}

// NewPair returns a comparison of two targets.
func NewPair(t testing.TB, etcd, basalt *Target) *Pair {
	return &Pair{t: t, Etcd: etcd, Basalt: basalt, Rev: 1, compactedAt: map[int64]bool{}}
}

// HashKV compares HashKV at rev, except at a revision the store was
// compacted at: etcd answers those from a cache filled when it compacted,
// hashed from the previous compaction on, and Basalt keeps no such cache
// (it hashes the history it holds, as etcd does at every other revision).
// Revision 0 is "current" unless Compact(0) ran, which etcd caches as 0.
func (p *Pair) HashKV(rev int64) {
	p.t.Helper()
	if p.compactedAt[rev] {
		return
	}
	p.Run(HashKV(rev))
}

// Compact compares a compaction and remembers its revision.
func (p *Pair) Compact(rev int64, physical bool) error {
	p.t.Helper()
	_, err := p.Run(Compact(rev, physical))
	if err == nil {
		p.compactedAt[rev] = true
	}
	return err
}

// Run sends c to both sides and records any difference. It returns etcd's
// response and error.
func (p *Pair) Run(c Call) (proto.Message, error) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	re, ee := c.Do(ctx, p.Etcd)
	rb, eb := c.Do(ctx, p.Basalt)
	if d := diff(re, ee, rb, eb); d != "" {
		p.diffs = append(p.diffs, fmt.Sprintf("%s:\n%s", c.Name, d))
		if len(p.diffs) >= 10 {
			p.Fail()
		}
	}
	if ee == nil {
		if h := header(re); h != nil && h.Revision > 0 {
			p.Rev = h.Revision
		}
	}
	return re, ee
}

// Fail fails the test with the differences recorded so far.
func (p *Pair) Fail() {
	p.t.Helper()
	if len(p.diffs) > 0 {
		p.t.Fatalf("%d responses differ from etcd's:\n%s", len(p.diffs), strings.Join(p.diffs, "\n\n"))
	}
}

// diff describes how Basalt's answer differs from etcd's; "" when equal.
func diff(re proto.Message, ee error, rb proto.Message, eb error) string {
	if ee != nil || eb != nil {
		se, sb := status.Convert(ee), status.Convert(eb)
		if ee == nil || eb == nil || se.Code() != sb.Code() || se.Message() != sb.Message() {
			return fmt.Sprintf("  etcd:   %v\n  basalt: %v%s", describe(re, ee), describe(rb, eb), "")
		}
		return ""
	}
	ne, nb := normalize(re), normalize(rb)
	if !proto.Equal(ne, nb) {
		return fmt.Sprintf("  etcd:   %s\n  basalt: %s", prototext.Format(ne), prototext.Format(nb))
	}
	return ""
}

func describe(m proto.Message, err error) string {
	if err != nil {
		s := status.Convert(err)
		return fmt.Sprintf("error %s %q", s.Code(), s.Message())
	}
	return prototext.Format(normalize(m))
}

// normalize clears what differs between any two clusters: ids and terms.
func normalize(m proto.Message) proto.Message {
	m = proto.Clone(m)
	if h := header(m); h != nil {
		h.ClusterId, h.MemberId, h.RaftTerm = 0, 0, 0
	}
	return m
}

// header returns the top-level response header of m, if it has one.
func header(m proto.Message) *pb.ResponseHeader {
	if m == nil {
		return nil
	}
	r := m.ProtoReflect()
	fd := r.Descriptor().Fields().ByName("header")
	if fd == nil || fd.Kind() != protoreflect.MessageKind {
		return nil
	}
	h, ok := r.Get(fd).Message().Interface().(*pb.ResponseHeader)
	if !ok || !r.Has(fd) {
		return nil
	}
	return h
}
