package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// A gateway (a member beyond the replication factor, which holds no
// replica of the data shards) serves its clients by relaying each call, as
// it is, to a member that holds every shard (Config.Upstreams): the same
// method and request, and the upstream's response or gRPC status. Streams
// (Watch, LeaseKeepAlive, Snapshot) are relayed message by message; when
// the upstream fails, the client's stream ends with its error and clientv3
// opens it again (resuming its watches). A relayed call carries relayedKey
// and is never relayed again, so that two members that each miss a shard
// for a moment (a split's child starting) do not bounce a call between
// them; the upstream still forwards it to a shard's leader.

// localMethods are answered by a gateway itself: they report on the member.
var localMethods = map[string]bool{
	"/etcdserverpb.Maintenance/Status": true,
	"/grpc.health.v1.Health/Check":     true,
	"/grpc.health.v1.Health/Watch":     true,
}

// relayTo returns the members to relay a call of method to, best first;
// none when this member serves it. The call's metadata is read last: only
// a gateway needs it, and reading it took about 1% of a member's CPU under
// a put load.
func (s *Server) relayTo(ctx context.Context, method string) []uint64 {
	if s.cfg.Upstreams == nil || localMethods[method] {
		return nil
	}
	ups := s.cfg.Upstreams()
	if len(ups) == 0 || isForwarded(ctx) || hasMetadata(ctx, relayedKey) {
		return nil
	}
	return ups
}

// relayedKey marks, in gRPC metadata, a call that a gateway relayed.
const relayedKey = "basalt-relayed"

// relayContext is the outgoing context of a relayed call: the client's
// metadata (its token, "hasleader"), marked as relayed.
func relayContext(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	md = md.Copy()
	md.Set(relayedKey, "1")
	return metadata.NewOutgoingContext(ctx, md)
}

// messageTypes returns the request and response types of a method
// ("/package.Service/Method").
func messageTypes(method string) (in, out protoreflect.MessageType, err error) {
	service, name, ok := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	if !ok {
		return nil, nil, fmt.Errorf("router: bad method name %q", method)
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		return nil, nil, err
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, nil, fmt.Errorf("router: %q is not a service", service)
	}
	md := sd.Methods().ByName(protoreflect.Name(name))
	if md == nil {
		return nil, nil, fmt.Errorf("router: no method %q", method)
	}
	if in, err = protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName()); err != nil {
		return nil, nil, err
	}
	if out, err = protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName()); err != nil {
		return nil, nil, err
	}
	return in, out, nil
}

// notSent tells whether a relayed call failed before it reached the
// upstream, so that it may go to the next one.
func notSent(err error) bool {
	if errors.Is(err, errNoPeerURL) {
		return true
	}
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.Unavailable && strings.Contains(st.Message(), "while dialing")
}

// errNoUpstream answers a gateway's call when no member holding the data
// could be reached.
var errNoUpstream = status.Error(codes.Unavailable, "basalt: no member holding the data could be reached")

// relayUnary is the unary interceptor that relays a gateway's calls.
func (s *Server) relayUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ups := s.relayTo(ctx, info.FullMethod)
	if len(ups) == 0 {
		return handler(ctx, req)
	}
	_, out, err := messageTypes(info.FullMethod)
	if err != nil {
		return nil, status.Error(codes.Unimplemented, err.Error())
	}
	octx := relayContext(ctx)
	err = errNoUpstream
	for _, id := range ups {
		conn, cerr := s.peers.conn(id)
		if cerr != nil {
			continue
		}
		reply := out.New().Interface()
		if err = conn.Invoke(octx, info.FullMethod, req, reply); err == nil {
			return reply, nil
		}
		if !notSent(err) {
			return nil, err
		}
	}
	return nil, err
}

// relayStream is the stream interceptor that relays a gateway's streams.
func (s *Server) relayStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ups := s.relayTo(ss.Context(), info.FullMethod)
	if len(ups) == 0 {
		return handler(srv, ss)
	}
	in, out, err := messageTypes(info.FullMethod)
	if err != nil {
		return status.Error(codes.Unimplemented, err.Error())
	}
	ctx, cancel := context.WithCancel(relayContext(ss.Context()))
	defer cancel()
	desc := &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
	var up grpc.ClientStream
	err = errNoUpstream
	for _, id := range ups {
		conn, cerr := s.peers.conn(id)
		if cerr != nil {
			continue
		}
		if up, err = conn.NewStream(ctx, desc, info.FullMethod); err == nil || !notSent(err) {
			break
		}
	}
	if err != nil {
		return err
	}
	// Client to upstream, until the client half-closes or the call ends.
	go func() {
		for {
			m := in.New().Interface()
			if err := ss.RecvMsg(m); err != nil {
				if errors.Is(err, io.EOF) {
					_ = up.CloseSend()
				} else {
					cancel()
				}
				return
			}
			if err := up.SendMsg(m); err != nil {
				return // RecvMsg below reports the upstream's error
			}
		}
	}()
	// Upstream to client, until the upstream ends the call.
	for {
		m := out.New().Interface()
		if err := up.RecvMsg(m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := ss.SendMsg(m); err != nil {
			return err
		}
	}
}
