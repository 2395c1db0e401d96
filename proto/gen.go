// Package proto holds the .proto sources of Basalt's internal messages; the
// generated Go code lives in proto/basaltpb.
package proto

//go:generate sh -c "go build -o ${TMPDIR:-/tmp}/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go && go build -o ${TMPDIR:-/tmp}/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc && protoc --plugin=protoc-gen-go=${TMPDIR:-/tmp}/protoc-gen-go --plugin=protoc-gen-go-grpc=${TMPDIR:-/tmp}/protoc-gen-go-grpc --go_out=. --go_opt=paths=source_relative --go_opt=Mbasalt.proto=github.com/basaltdb/basalt/proto/basaltpb --go-grpc_out=. --go-grpc_opt=paths=source_relative --go-grpc_opt=Mbasalt.proto=github.com/basaltdb/basalt/proto/basaltpb basalt.proto && mv basalt.pb.go basalt_grpc.pb.go basaltpb/"
