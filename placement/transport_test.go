package placement

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"net"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4/config"
	raftpb "github.com/lni/dragonboat/v4/raftpb"
)

// startTransport starts a transport on a free loopback port and returns it
// with the batches and chunks it receives.
func startTransport(t *testing.T, acceptChunk func(raftpb.Chunk) bool) (*tcpTransport, <-chan raftpb.MessageBatch, <-chan raftpb.Chunk) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	batches := make(chan raftpb.MessageBatch, 16)
	chunks := make(chan raftpb.Chunk, 16)
	tr := TCPTransport{}.Create(config.NodeHostConfig{RaftAddress: addr},
		func(mb raftpb.MessageBatch) { batches <- mb },
		func(c raftpb.Chunk) bool { chunks <- c; return acceptChunk(c) }).(*tcpTransport)
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, batches, chunks
}

func receive[T any](t *testing.T, c <-chan T) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("nothing received")
		panic("unreachable")
	}
}

// The transport carries dragonboat's message batches and snapshot chunks
// intact, large ones included, and a refused chunk ends its connection.
func TestTransportCarriesBatchesAndChunks(t *testing.T) {
	refuse := []byte("refuse")
	rx, batches, chunks := startTransport(t, func(c raftpb.Chunk) bool { return !bytes.Equal(c.Data, refuse) })
	tx, _, _ := startTransport(t, func(raftpb.Chunk) bool { return true })
	ctx := context.Background()

	conn, err := tx.GetConnection(ctx, rx.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	big := bytes.Repeat([]byte("v"), 3<<20) // larger than the read buffer
	sent := []raftpb.MessageBatch{
		{DeploymentId: 7, SourceAddress: tx.addr, BinVer: 1, Requests: []raftpb.Message{
			{Type: raftpb.Replicate, To: 2, From: 1, ShardID: 5, Term: 3, LogTerm: 3, LogIndex: 10, Commit: 9,
				Entries: []raftpb.Entry{{Term: 3, Index: 11, Cmd: []byte("put a")}, {Term: 3, Index: 12, Cmd: big}}},
		}},
		{DeploymentId: 7, SourceAddress: tx.addr, Requests: []raftpb.Message{{Type: raftpb.Heartbeat, To: 3, From: 1, ShardID: 5}}},
	}
	for _, mb := range sent {
		if err := conn.SendMessageBatch(mb); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range sent {
		got := receive(t, batches)
		if !equalBatches(got, want) {
			t.Fatalf("batch %d arrived as %+v, sent %+v", i, got.Requests[0].Type, want.Requests[0].Type)
		}
	}

	sconn, err := tx.GetSnapshotConnection(ctx, rx.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer sconn.Close()
	chunk := raftpb.Chunk{ShardID: 5, ReplicaID: 2, From: 1, Index: 100, Term: 3, ChunkId: 0, ChunkCount: 2, Data: big, DeploymentId: 7}
	if err := sconn.SendChunk(chunk); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, chunks); got.Index != 100 || !bytes.Equal(got.Data, big) {
		t.Fatalf("chunk arrived as index %d with %d bytes", got.Index, len(got.Data))
	}
	if err := sconn.SendChunk(raftpb.Chunk{ShardID: 5, ChunkId: 1, Data: refuse}); err != nil {
		t.Fatal(err)
	}
	receive(t, chunks)
	// The receiver closed the connection: a later send fails.
	waitSendFails(t, func() error { return sconn.SendChunk(raftpb.Chunk{ShardID: 5, ChunkId: 2, Data: []byte("x")}) })
	// The message connection is not affected.
	if err := conn.SendMessageBatch(sent[1]); err != nil {
		t.Fatal(err)
	}
	receive(t, batches)
}

func waitSendFails(t *testing.T, send func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for send() == nil {
		if time.Now().After(deadline) {
			t.Fatal("sends over a connection the receiver closed still succeed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func equalBatches(a, b raftpb.MessageBatch) bool {
	ab, err1 := a.Marshal()
	bb, err2 := b.Marshal()
	return err1 == nil && err2 == nil && bytes.Equal(ab, bb)
}

// frame encodes a frame as a sender does, with the given fields.
func frame(kind byte, length int, crc uint32, payload []byte) []byte {
	f := []byte{kind}
	f = binary.BigEndian.AppendUint32(f, uint32(length))
	f = binary.BigEndian.AppendUint32(f, crc)
	return append(f, payload...)
}

// A connection that sends something other than a frame is closed without
// handing anything to dragonboat, and the transport goes on serving the
// others.
func TestTransportDropsBadFrames(t *testing.T) {
	rx, batches, _ := startTransport(t, func(raftpb.Chunk) bool { return true })
	good := raftpb.MessageBatch{DeploymentId: 7, Requests: []raftpb.Message{{Type: raftpb.Heartbeat, To: 2, From: 1, ShardID: 5}}}
	payload, err := good.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	crc := crc32.ChecksumIEEE(payload)
	bad := map[string][]byte{
		"unknown kind":    frame(9, len(payload), crc, payload),
		"wrong checksum":  frame(frameBatch, len(payload), crc+1, payload),
		"too large":       frame(frameBatch, maxFrame+1, crc, payload),
		"not a batch":     frame(frameBatch, 3, crc32.ChecksumIEEE([]byte{0xff, 0xff, 0xff}), []byte{0xff, 0xff, 0xff}),
		"an HTTP request": []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
	}
	for name, b := range bad {
		conn, err := net.Dial("tcp", rx.addr)
		if err != nil {
			t.Fatal(err)
		}
		// The bad frame, then a good one that must not be read.
		if _, err := conn.Write(append(b, frame(frameBatch, len(payload), crc, payload)...)); err != nil {
			t.Fatal(err)
		}
		if !closedByPeer(conn) {
			t.Fatalf("%s: the connection stayed open", name)
		}
		conn.Close()
		select {
		case mb := <-batches:
			t.Fatalf("%s: a batch was handed on: %+v", name, mb)
		default:
		}
	}
	// A well-formed frame on a new connection still goes through.
	conn, err := net.Dial("tcp", rx.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(frame(frameBatch, len(payload), crc, payload)); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, batches); !equalBatches(got, good) {
		t.Fatalf("got %+v", got)
	}
}

// closedByPeer tells whether the other end closes conn within 10 s.
func closedByPeer(conn net.Conn) bool {
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := conn.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// Close stops the transport: it closes the connections it accepted and
// accepts no more.
func TestTransportClose(t *testing.T) {
	rx, batches, _ := startTransport(t, func(raftpb.Chunk) bool { return true })
	conn, err := net.Dial("tcp", rx.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	payload, err := (&raftpb.MessageBatch{DeploymentId: 7}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(frame(frameBatch, len(payload), crc32.ChecksumIEEE(payload), payload)); err != nil {
		t.Fatal(err)
	}
	receive(t, batches) // the connection was accepted and is being served
	done := make(chan error, 1)
	go func() { done <- rx.Close() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if !closedByPeer(conn) {
		t.Fatal("an accepted connection stayed open after Close")
	}
	if c, err := net.DialTimeout("tcp", rx.addr, time.Second); err == nil {
		c.Close()
		t.Fatal("the transport accepts connections after Close")
	}
}
