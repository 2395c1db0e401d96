package shard

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/basaltpb"
)

// TestWriteBatchEncoding checks that the hand-written encoding is exactly
// the protobuf encoding of basalt.proto's DataCommand, both ways.
func TestWriteBatchEncoding(t *testing.T) {
	txns := [][]byte{[]byte("first"), {}, bytes.Repeat([]byte{0xff}, 300)}
	got := encodeWriteBatch(1<<40, txns)
	msg := &basaltpb.DataCommand{Command: &basaltpb.DataCommand_WriteBatch{WriteBatch: &basaltpb.WriteBatch{Writes: []*basaltpb.Write{
		{Revision: 1 << 40, Txn: txns[0]}, {Revision: 1<<40 + 1, Txn: txns[1]}, {Revision: 1<<40 + 2, Txn: txns[2]},
	}}}}
	want, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encoding differs from protobuf's:\n got %x\nwant %x", got, want)
	}
	var revs []int64
	var back [][]byte
	compact, err := decodeDataCommand(want, func(rev int64, txn []byte) error {
		revs = append(revs, rev)
		back = append(back, txn)
		return nil
	})
	if err != nil || compact != nil || len(revs) != 3 || revs[2] != 1<<40+2 || !bytes.Equal(back[2], txns[2]) {
		t.Fatalf("decode: %v %v %v", err, compact, revs)
	}
	cc, _ := proto.Marshal(&basaltpb.DataCommand{Command: &basaltpb.DataCommand_Compact{Compact: &basaltpb.CompactCommand{Revision: 9}}})
	if c, err := decodeDataCommand(cc, nil); err != nil || c.GetCompact().GetRevision() != 9 {
		t.Fatalf("compact: %v %v", c, err)
	}
}

// FuzzDecodeDataCommand: malformed entries are errors, never panics.
func FuzzDecodeDataCommand(f *testing.F) {
	f.Add(encodeWriteBatch(7, [][]byte{[]byte("x")}))
	f.Add([]byte{0x0a, 0x05, 0x0a, 0x03, 0x08, 0x01})
	f.Add([]byte{0x12, 0x02, 0x08, 0x05})
	f.Fuzz(func(t *testing.T, cmd []byte) {
		_, err := decodeDataCommand(cmd, func(int64, []byte) error { return nil })
		if err != nil && !errors.Is(err, errBadCommand) {
			t.Fatalf("unexpected error kind: %v", err)
		}
	})
}
