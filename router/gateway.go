package router

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	gw "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	etcdgw "go.etcd.io/etcd/api/v3/etcdserverpb/gw"
	v3electiongw "go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb/gw"
	v3lockgw "go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb/gw"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/basaltdb/basalt/internal/version"
)

// httpHandler serves etcd's HTTP/JSON gateway (/v3/...) through a gRPC
// connection to addr, plus /health and /version.
func (s *Server) httpHandler(addr string) (http.Handler, *grpc.ClientConn, error) {
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<31-1), grpc.MaxCallSendMsgSize(s.cfg.MaxRequestBytes+grpcOverheadBytes)),
	)
	if err != nil {
		return nil, nil, err
	}
	// The marshaler etcd uses: proto field names, no zero values.
	gwmux := gw.NewServeMux(gw.WithMarshalerOption(gw.MIMEWildcard, &gw.HTTPBodyMarshaler{
		Marshaler: &gw.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		},
	}))
	ctx := context.Background()
	for _, register := range []func(context.Context, *gw.ServeMux, *grpc.ClientConn) error{
		etcdgw.RegisterKVHandler,
		etcdgw.RegisterWatchHandler,
		etcdgw.RegisterLeaseHandler,
		v3lockgw.RegisterLockHandler,
		v3electiongw.RegisterElectionHandler,
		etcdgw.RegisterMaintenanceHandler,
		etcdgw.RegisterClusterHandler,
	} {
		if err := register(ctx, gwmux, conn); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/v3/", gwmux)
	mux.HandleFunc("/health", s.serveHealth)
	mux.HandleFunc("/version", serveVersion)
	if s.cfg.EnablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// etcd still answers the v3beta paths of older clients.
		if strings.HasPrefix(r.URL.Path, "/v3beta/") {
			r.URL.Path = "/v3/" + strings.TrimPrefix(r.URL.Path, "/v3beta/")
		}
		mux.ServeHTTP(w, r)
	}), conn, nil
}

// serveHealth answers as etcd's /health: healthy when a linearizable read
// succeeds.
func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	body := struct {
		Health string `json:"health"`
		Reason string `json:"reason"`
	}{Health: "true"}
	code := http.StatusOK
	kv := &kvServer{s: s}
	// Through the relay: a gateway reads from a member that holds the data.
	info := &grpc.UnaryServerInfo{FullMethod: "/etcdserverpb.KV/Range"}
	_, err := s.relayUnary(ctx, &pb.RangeRequest{Key: []byte("health")}, info, func(ctx context.Context, req any) (any, error) {
		return kv.rangeRouted(ctx, req.(*pb.RangeRequest))
	})
	if err != nil {
		body.Health, body.Reason = "false", "RANGE ERROR:"+err.Error()
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

func serveVersion(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{
		"etcdserver":  version.Etcd,
		"etcdcluster": version.EtcdCluster,
		"basalt":      version.Basalt,
	})
}
