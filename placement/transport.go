package placement

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	raftpb "github.com/lni/dragonboat/v4/raftpb"
)

// TCPTransport is the members' Raft transport: dragonboat's message
// batches and snapshot chunks over TCP, one frame each. A frame is a kind
// byte, the payload's length and CRC-32 (4 bytes each, big endian) and the
// payload, written with one write and read through a buffer.
// (dragonboat's own TCP transport writes a frame in three writes, each
// with its own deadline, and reads it in three reads: on three members on
// one machine it took 11% of their CPU per put.)
type TCPTransport struct{}

var _ config.TransportFactory = TCPTransport{}

// Create returns the transport of a node host.
func (TCPTransport) Create(nhc config.NodeHostConfig, mh raftio.MessageHandler, ch raftio.ChunkHandler) raftio.ITransport {
	addr := nhc.ListenAddress
	if addr == "" {
		addr = nhc.RaftAddress
	}
	return &tcpTransport{addr: addr, onBatch: mh, onChunk: ch, conns: make(map[net.Conn]struct{})}
}

// Validate tells whether addr is a host:port.
func (TCPTransport) Validate(addr string) bool {
	_, _, err := net.SplitHostPort(addr)
	return err == nil
}

const (
	frameBatch byte = 1
	frameChunk byte = 2

	frameHeaderSize = 9
	// maxFrame bounds a frame's payload; a larger one is taken for garbage
	// and its connection closed. dragonboat's batches stay under 64 MiB
	// and its chunks are 2 MiB.
	maxFrame = 256 << 20

	// maxKeptBuffer bounds the buffer a connection keeps between frames:
	// a larger frame (a large batch, a snapshot's chunk) gets its own.
	maxKeptBuffer = 4 << 20

	dialTimeout  = 5 * time.Second
	writeTimeout = 30 * time.Second
	// readTimeout closes a connection that carried nothing for this long:
	// a live peer sends heartbeats every heartbeat interval.
	readTimeout = time.Minute
)

type tcpTransport struct {
	addr    string
	onBatch raftio.MessageHandler
	onChunk raftio.ChunkHandler

	ln net.Listener
	wg sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{} // accepted, open
}

func (t *tcpTransport) Name() string { return "basalt-tcp" }

func (t *tcpTransport) Start() error {
	ln, err := net.Listen("tcp", t.addr)
	if err != nil {
		return err
	}
	t.ln = ln
	t.wg.Add(1)
	go t.accept()
	return nil
}

func (t *tcpTransport) accept() {
	defer t.wg.Done()
	for {
		conn, err := t.ln.Accept()
		if err != nil {
			return // closed
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			conn.Close()
			return
		}
		t.conns[conn] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go func() {
			defer t.wg.Done()
			t.serve(conn)
			t.mu.Lock()
			delete(t.conns, conn)
			t.mu.Unlock()
			conn.Close()
		}()
	}
}

// serve hands the frames read from conn to dragonboat until conn fails,
// carries a bad frame, or a chunk is refused.
func (t *tcpTransport) serve(conn net.Conn) {
	r := bufio.NewReaderSize(conn, 64<<10)
	var header [frameHeaderSize]byte
	var buf []byte
	for {
		if err := conn.SetReadDeadline(time.Now().Add(readTimeout)); err != nil {
			return
		}
		if _, err := io.ReadFull(r, header[:]); err != nil {
			return
		}
		kind := header[0]
		n := binary.BigEndian.Uint32(header[1:5])
		if n > maxFrame || kind != frameBatch && kind != frameChunk {
			return
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		payload := buf[:n]
		if _, err := io.ReadFull(r, payload); err != nil {
			return
		}
		if crc32.ChecksumIEEE(payload) != binary.BigEndian.Uint32(header[5:9]) {
			return
		}
		// Unmarshal copies what it keeps, so buf is reused.
		switch kind {
		case frameBatch:
			var mb raftpb.MessageBatch
			if mb.Unmarshal(payload) != nil {
				return
			}
			t.onBatch(mb)
		case frameChunk:
			var c raftpb.Chunk
			if c.Unmarshal(payload) != nil || !t.onChunk(c) {
				return
			}
		}
		if cap(buf) > maxKeptBuffer {
			buf = nil
		}
	}
}

func (t *tcpTransport) Close() error {
	t.mu.Lock()
	t.closed = true
	for conn := range t.conns {
		conn.Close()
	}
	t.mu.Unlock()
	var err error
	if t.ln != nil {
		err = t.ln.Close()
	}
	t.wg.Wait()
	return err
}

func (t *tcpTransport) dial(ctx context.Context, target string) (*frameConn, error) {
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, err
	}
	return &frameConn{conn: conn}, nil
}

func (t *tcpTransport) GetConnection(ctx context.Context, target string) (raftio.IConnection, error) {
	return t.dial(ctx, target)
}

func (t *tcpTransport) GetSnapshotConnection(ctx context.Context, target string) (raftio.ISnapshotConnection, error) {
	return t.dial(ctx, target)
}

// frameConn is a connection to a peer's transport. dragonboat uses one
// from one goroutine at a time.
type frameConn struct {
	conn net.Conn
	buf  []byte
}

// errFrameTooLarge is what sending a frame above maxFrame returns.
var errFrameTooLarge = errors.New("placement: raft frame too large")

type marshaler interface {
	Size() int
	MarshalTo([]byte) (int, error)
}

func (c *frameConn) send(kind byte, m marshaler) error {
	n := m.Size()
	if n > maxFrame {
		return fmt.Errorf("%w: %d bytes", errFrameTooLarge, n)
	}
	if cap(c.buf) < frameHeaderSize+n {
		c.buf = make([]byte, frameHeaderSize+n)
	}
	frame := c.buf[:frameHeaderSize+n]
	if _, err := m.MarshalTo(frame[frameHeaderSize:]); err != nil {
		return err
	}
	frame[0] = kind
	binary.BigEndian.PutUint32(frame[1:5], uint32(n))
	binary.BigEndian.PutUint32(frame[5:9], crc32.ChecksumIEEE(frame[frameHeaderSize:]))
	if err := c.conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	_, err := c.conn.Write(frame)
	if cap(c.buf) > maxKeptBuffer {
		c.buf = nil
	}
	return err
}

func (c *frameConn) SendMessageBatch(mb raftpb.MessageBatch) error { return c.send(frameBatch, &mb) }

func (c *frameConn) SendChunk(chunk raftpb.Chunk) error { return c.send(frameChunk, &chunk) }

func (c *frameConn) Close() { c.conn.Close() }
