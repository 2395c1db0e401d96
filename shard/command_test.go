package shard

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/basaltpb"
)

// TestWriteBatchEncoding checks that the hand-written encoding is exactly
// the protobuf encoding of basalt.proto's DataCommand, both ways, with
// marshaled transactions and a lone put that the batch encodes itself.
func TestWriteBatchEncoding(t *testing.T) {
	txns := [][]byte{[]byte("first"), {}, bytes.Repeat([]byte{0xff}, 300)}
	put := &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
		Key: []byte("k"), Value: bytes.Repeat([]byte("v"), 200),
	}}}}}
	putEnc, err := encodeTxn(put)
	if err != nil || putEnc.put == nil {
		t.Fatalf("a lone put is not left to the batch: %+v %v", putEnc, err)
	}
	putBytes, err := proto.Marshal(put)
	if err != nil {
		t.Fatal(err)
	}
	entries := []entryTxn{{data: txns[0], size: len(txns[0])}, {}, {data: txns[2], size: len(txns[2])}, putEnc}
	got := encodeWriteBatch(1<<40, entries)
	msg := &basaltpb.DataCommand{Command: &basaltpb.DataCommand_WriteBatch{WriteBatch: &basaltpb.WriteBatch{Writes: []*basaltpb.Write{
		{Revision: 1 << 40, Txn: txns[0]}, {Revision: 1<<40 + 1, Txn: txns[1]}, {Revision: 1<<40 + 2, Txn: txns[2]}, {Revision: 1<<40 + 3, Txn: putBytes},
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
	if err != nil || compact != nil || len(revs) != 4 || revs[2] != 1<<40+2 || !bytes.Equal(back[2], txns[2]) || !bytes.Equal(back[3], putBytes) {
		t.Fatalf("decode: %v %v %v", err, compact, revs)
	}
	cc, _ := proto.Marshal(&basaltpb.DataCommand{Command: &basaltpb.DataCommand_Compact{Compact: &basaltpb.CompactCommand{Revision: 9}}})
	if c, err := decodeDataCommand(cc, nil); err != nil || c.GetCompact().GetRevision() != 9 {
		t.Fatalf("compact: %v %v", c, err)
	}
}

// FuzzDecodeDataCommand: malformed entries are errors, never panics.
func FuzzDecodeDataCommand(f *testing.F) {
	f.Add(encodeWriteBatch(7, []entryTxn{{data: []byte("x"), size: 1}}))
	f.Add([]byte{0x0a, 0x05, 0x0a, 0x03, 0x08, 0x01})
	f.Add([]byte{0x12, 0x02, 0x08, 0x05})
	f.Fuzz(func(t *testing.T, cmd []byte) {
		_, err := decodeDataCommand(cmd, func(int64, []byte) error { return nil })
		if err != nil && !errors.Is(err, errBadCommand) {
			t.Fatalf("unexpected error kind: %v", err)
		}
	})
}

// TestEncodeTxn checks that the hand-written encoding of a lone put is
// exactly proto.Marshal's, that it decodes to the same transaction, and
// that every other transaction goes through proto.Marshal unchanged.
func TestEncodeTxn(t *testing.T) {
	put := func(p *pb.PutRequest) *pb.TxnRequest {
		return &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: p}}}}
	}
	withUnknown := put(&pb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	// Field 99 of the put, as a newer client might send it.
	withUnknown.Success[0].GetRequestPut().ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1))
	cases := []struct {
		name string
		txn  *pb.TxnRequest
		hand bool // encoded by hand
	}{
		{"put", put(&pb.PutRequest{Key: []byte("foo"), Value: []byte("bar")}), true},
		{"empty put", put(&pb.PutRequest{}), true},
		{"empty value", put(&pb.PutRequest{Key: []byte("k")}), true},
		{"long value", put(&pb.PutRequest{Key: []byte("k"), Value: bytes.Repeat([]byte{0xab}, 70000)}), true},
		{"lease and flags", put(&pb.PutRequest{Key: []byte("k"), Value: []byte("v"), Lease: 1<<62 + 5, PrevKv: true, IgnoreLease: true}), true},
		{"ignore value", put(&pb.PutRequest{Key: []byte("k"), IgnoreValue: true}), true},
		{"negative lease", put(&pb.PutRequest{Key: []byte("k"), Lease: -1}), true},
		{"unknown field", withUnknown, false},
		{"compare", &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("k"), Target: pb.Compare_VERSION, TargetUnion: &pb.Compare_Version{Version: 0}}},
			Success: put(&pb.PutRequest{Key: []byte("k")}).Success,
		}, false},
		{"two puts", &pb.TxnRequest{Success: append(put(&pb.PutRequest{Key: []byte("a")}).Success, put(&pb.PutRequest{Key: []byte("b")}).Success...)}, false},
		{"delete", &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("k")}}}}}, false},
		{"failure branch", &pb.TxnRequest{Success: put(&pb.PutRequest{Key: []byte("a")}).Success, Failure: put(&pb.PutRequest{Key: []byte("b")}).Success}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			enc, err := encodeTxn(c.txn)
			if err != nil {
				t.Fatal(err)
			}
			if hand := enc.put != nil; hand != c.hand {
				t.Fatalf("encoded by hand: %v, want %v", hand, c.hand)
			}
			got := enc.appendTo([]byte("prefix"))
			if string(got[:6]) != "prefix" || len(got)-6 != enc.size {
				t.Fatalf("appended %d bytes after %q, size says %d", len(got)-6, got[:6], enc.size)
			}
			got = got[6:]
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(c.txn)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encoding differs from protobuf's:\n got %x\nwant %x", got, want)
			}
			back := &pb.TxnRequest{}
			if err := proto.Unmarshal(got, back); err != nil || !proto.Equal(back, c.txn) {
				t.Fatalf("decoded %v (%v), want %v", back, err, c.txn)
			}
		})
	}
}

// FuzzEncodeTxn: for any put, the hand-written encoding is proto.Marshal's.
func FuzzEncodeTxn(f *testing.F) {
	f.Add([]byte("foo"), []byte("bar"), int64(0), false, false, false)
	f.Add([]byte{}, bytes.Repeat([]byte("v"), 200), int64(-7), true, true, true)
	f.Fuzz(func(t *testing.T, key, value []byte, lease int64, prevKv, ignoreValue, ignoreLease bool) {
		txn := &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
			Key: key, Value: value, Lease: lease, PrevKv: prevKv, IgnoreValue: ignoreValue, IgnoreLease: ignoreLease,
		}}}}}
		enc, err := encodeTxn(txn)
		if err != nil {
			t.Fatal(err)
		}
		got := enc.appendTo(nil)
		if enc.put == nil || len(got) != enc.size {
			t.Fatalf("lone put %v: encoded by hand %v, %d bytes, size says %d", txn, enc.put != nil, len(got), enc.size)
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(txn)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("encoding differs from protobuf's:\n got %x\nwant %x", got, want)
		}
	})
}

// BenchmarkWriteBatch encodes a batch of 8 puts (8-byte keys, 256-byte
// values), as the sequencer does: by hand, and through proto.Marshal.
func BenchmarkWriteBatch(b *testing.B) {
	txns := make([]*pb.TxnRequest, 8)
	for i := range txns {
		txns[i] = &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
			Key: fmt.Appendf(nil, "key%05d", i), Value: bytes.Repeat([]byte("v"), 256),
		}}}}}
	}
	entries := make([]entryTxn, len(txns))
	b.Run("hand", func(b *testing.B) {
		for b.Loop() {
			for i, txn := range txns {
				entries[i], _ = encodeTxn(txn)
			}
			encodeWriteBatch(1, entries)
		}
	})
	b.Run("proto", func(b *testing.B) {
		for b.Loop() {
			for i, txn := range txns {
				data, _ := proto.Marshal(txn)
				entries[i] = entryTxn{data: data, size: len(data)}
			}
			encodeWriteBatch(1, entries)
		}
	})
}

// TestUnmarshalTxn: a lone put is decoded by hand to what proto.Unmarshal
// makes of it, and anything else, or a put with a field repeated or
// unknown, is left to proto.Unmarshal.
func TestUnmarshalTxn(t *testing.T) {
	lone := func(p *pb.PutRequest) *pb.TxnRequest {
		return &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: p}}}}
	}
	marshal := func(txn *pb.TxnRequest) []byte {
		b, err := proto.Marshal(txn)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	putBody := func(extra []byte) []byte {
		body := protowire.AppendBytes(protowire.AppendTag(nil, fieldPutKey, protowire.BytesType), []byte("k"))
		body = append(body, extra...)
		op := protowire.AppendBytes(protowire.AppendTag(nil, fieldRequestOpPut, protowire.BytesType), body)
		return protowire.AppendBytes(protowire.AppendTag(nil, fieldTxnSuccess, protowire.BytesType), op)
	}
	cases := []struct {
		name string
		data []byte
		hand bool
	}{
		{"put", marshal(lone(&pb.PutRequest{Key: []byte("foo"), Value: []byte("bar")})), true},
		{"empty put", marshal(lone(&pb.PutRequest{})), true},
		{"every field", marshal(lone(&pb.PutRequest{Key: []byte("k"), Value: bytes.Repeat([]byte("v"), 300), Lease: -3, PrevKv: true, IgnoreValue: true, IgnoreLease: true})), true},
		{"key twice", putBody(protowire.AppendBytes(protowire.AppendTag(nil, fieldPutKey, protowire.BytesType), []byte("other"))), false},
		{"unknown field", putBody(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1)), false},
		{"lease as bytes", putBody(protowire.AppendBytes(protowire.AppendTag(nil, fieldPutLease, protowire.BytesType), []byte("x"))), false},
		{"two puts", marshal(&pb.TxnRequest{Success: append(lone(&pb.PutRequest{Key: []byte("a")}).Success, lone(&pb.PutRequest{Key: []byte("b")}).Success...)}), false},
		{"compare", marshal(&pb.TxnRequest{Compare: []*pb.Compare{{Key: []byte("k")}}, Success: lone(&pb.PutRequest{Key: []byte("k")}).Success}), false},
		{"delete", marshal(&pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("k")}}}}}), false},
		{"empty", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if hand := decodeLonePut(c.data) != nil; hand != c.hand {
				t.Fatalf("decoded by hand: %v, want %v", hand, c.hand)
			}
			got, err := UnmarshalTxn(c.data)
			if err != nil {
				t.Fatal(err)
			}
			want := &pb.TxnRequest{}
			if err := proto.Unmarshal(c.data, want); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Fatalf("decoded %v, want %v", got, want)
			}
		})
	}
	if _, err := UnmarshalTxn([]byte{0x12, 0x05, 0x12}); err == nil {
		t.Fatal("a truncated transaction decoded without an error")
	}
}

// FuzzUnmarshalTxn: whatever the bytes, a transaction decoded by hand is
// the one proto.Unmarshal decodes, and a put encoded by hand comes back
// the same.
func FuzzUnmarshalTxn(f *testing.F) {
	put, _ := MarshalTxn(&pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
		Key: []byte("k"), Value: []byte("v"), Lease: 7, PrevKv: true,
	}}}}})
	f.Add(put)
	f.Add([]byte{0x12, 0x02, 0x12, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		hand := decodeLonePut(data)
		want := &pb.TxnRequest{}
		err := proto.Unmarshal(data, want)
		if hand == nil {
			return
		}
		if err != nil || !proto.Equal(hand, want) {
			t.Fatalf("decoded by hand %v, proto.Unmarshal %v (%v)", hand, want, err)
		}
		back, err := MarshalTxn(hand)
		if err != nil {
			t.Fatal(err)
		}
		if again := decodeLonePut(back); again == nil || !proto.Equal(again, hand) {
			t.Fatalf("round trip of %v gave %v", hand, again)
		}
	})
}
