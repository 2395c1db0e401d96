// Package proto holds the .proto sources of Basalt's internal messages; the
// generated Go code lives in proto/basaltpb.
package proto

//go:generate sh -c "go build -o ${TMPDIR:-/tmp}/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go && protoc --plugin=protoc-gen-go=${TMPDIR:-/tmp}/protoc-gen-go --go_out=. --go_opt=paths=source_relative --go_opt=Mbasalt.proto=github.com/basaltdb/basalt/proto/basaltpb basalt.proto && mv basalt.pb.go basaltpb/"
