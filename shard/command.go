package shard

import (
	"errors"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/basaltpb"
)

// Write batches are on every write's path, so they are encoded and decoded
// by hand, straight from the marshaled transactions to the entry and back,
// without building basaltpb.Write messages. The bytes are exactly
// basaltpb.DataCommand{write_batch: WriteBatch{writes: [...]}}, so the
// .proto stays the description of the format (TestWriteBatchEncoding).
//
// A lone put (what KV.Put sends, and a Txn of one put without compares) is
// not marshaled on its own at all: the batch encodes it straight into the
// entry, to the bytes proto.Marshal makes (TestEncodeTxn). Marshaling took
// 2% of a node's CPU under a put load, most of it in proto.Marshal finding
// its way through the message types, the rest in a buffer per put that was
// copied into the entry and dropped.

// Field numbers of basalt.proto.
const (
	fieldDataCommandWriteBatch = 1
	fieldWriteBatchWrites      = 1
	fieldWriteRevision         = 1
	fieldWriteTxn              = 2
)

// Field numbers of etcd's rpc.proto that lone puts are encoded with.
const (
	fieldTxnSuccess     = 2
	fieldRequestOpPut   = 2
	fieldPutKey         = 1
	fieldPutValue       = 2
	fieldPutLease       = 3
	fieldPutPrevKv      = 4
	fieldPutIgnoreValue = 5
	fieldPutIgnoreLease = 6
)

// entryTxn is a write transaction as a write batch carries it: marshaled,
// or a lone put that the batch encodes.
type entryTxn struct {
	data []byte
	put  *pb.PutRequest
	size int // of the encoding
}

// encodeTxn prepares txn for a write batch.
func encodeTxn(txn *pb.TxnRequest) (entryTxn, error) {
	if put := lonePut(txn); put != nil {
		return entryTxn{put: put, size: lonePutSize(put)}, nil
	}
	data, err := proto.Marshal(txn)
	return entryTxn{data: data, size: len(data)}, err
}

// appendTo appends the transaction's encoding to b.
func (t entryTxn) appendTo(b []byte) []byte {
	if t.put == nil {
		return append(b, t.data...)
	}
	put := t.put
	putLen := putSize(put)
	b = protowire.AppendTag(b, fieldTxnSuccess, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(protowire.SizeTag(fieldRequestOpPut)+protowire.SizeBytes(putLen)))
	b = protowire.AppendTag(b, fieldRequestOpPut, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(putLen))
	b = appendBytesField(b, fieldPutKey, put.Key)
	b = appendBytesField(b, fieldPutValue, put.Value)
	b = appendVarintField(b, fieldPutLease, uint64(put.Lease))
	b = appendVarintField(b, fieldPutPrevKv, protowire.EncodeBool(put.PrevKv))
	b = appendVarintField(b, fieldPutIgnoreValue, protowire.EncodeBool(put.IgnoreValue))
	return appendVarintField(b, fieldPutIgnoreLease, protowire.EncodeBool(put.IgnoreLease))
}

// MarshalTxn marshals a write transaction to proto.Marshal's bytes, a lone
// put by hand (see encodeTxn).
func MarshalTxn(txn *pb.TxnRequest) ([]byte, error) {
	t, err := encodeTxn(txn)
	if err != nil || t.put == nil {
		return t.data, err
	}
	return t.appendTo(make([]byte, 0, t.size)), nil
}

// UnmarshalTxn decodes a marshaled write transaction as proto.Unmarshal
// does. A lone put with only the fields a put has is decoded by hand, into
// one allocation for its messages and one for its key and value: decoding
// puts took about 3% of a replica's CPU where it did not propose them
// (followers, and a leader's forwarded writes).
func UnmarshalTxn(data []byte) (*pb.TxnRequest, error) {
	if txn := decodeLonePut(data); txn != nil {
		return txn, nil
	}
	txn := &pb.TxnRequest{}
	if err := proto.Unmarshal(data, txn); err != nil {
		return nil, err
	}
	return txn, nil
}

// decodeLonePut decodes data when it is a transaction of one put, every
// field once at most; otherwise it returns nil and leaves the decision to
// proto.Unmarshal.
func decodeLonePut(data []byte) *pb.TxnRequest {
	op, ok := onlyBytesField(data, fieldTxnSuccess)
	if !ok {
		return nil
	}
	body, ok := onlyBytesField(op, fieldRequestOpPut)
	if !ok {
		return nil
	}
	var key, value []byte
	var lease int64
	var flags [fieldPutIgnoreLease + 1]bool
	var seen uint8
	for len(body) > 0 {
		num, typ, n := protowire.ConsumeTag(body)
		if n < 0 || num < fieldPutKey || num > fieldPutIgnoreLease || seen&(1<<num) != 0 {
			return nil
		}
		seen |= 1 << num
		body = body[n:]
		switch {
		case (num == fieldPutKey || num == fieldPutValue) && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(body)
			if m < 0 {
				return nil
			}
			if num == fieldPutKey {
				key = v
			} else {
				value = v
			}
			body = body[m:]
		case num >= fieldPutLease && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(body)
			if m < 0 {
				return nil
			}
			if num == fieldPutLease {
				lease = int64(v)
			} else {
				flags[num] = protowire.DecodeBool(v)
			}
			body = body[m:]
		default:
			return nil
		}
	}
	t := &struct {
		txn  pb.TxnRequest
		ops  [1]*pb.RequestOp
		op   pb.RequestOp
		wrap pb.RequestOp_RequestPut
		put  pb.PutRequest
	}{}
	t.put = pb.PutRequest{Lease: lease, PrevKv: flags[fieldPutPrevKv], IgnoreValue: flags[fieldPutIgnoreValue], IgnoreLease: flags[fieldPutIgnoreLease]}
	if len(key)+len(value) > 0 {
		// Copies: the entry's buffer is not ours to keep. Empty fields stay
		// nil, as proto.Unmarshal leaves them.
		kv := append(append(make([]byte, 0, len(key)+len(value)), key...), value...)
		if len(key) > 0 {
			t.put.Key = kv[:len(key):len(key)]
		}
		if len(value) > 0 {
			t.put.Value = kv[len(key):]
		}
	}
	t.wrap.RequestPut = &t.put
	t.op.Request = &t.wrap
	t.ops[0] = &t.op
	t.txn.Success = t.ops[:]
	return &t.txn
}

// onlyBytesField returns the value of b's one field when b holds exactly
// one field, number num, of the bytes type.
func onlyBytesField(b []byte, num protowire.Number) ([]byte, bool) {
	got, typ, n := protowire.ConsumeTag(b)
	if n < 0 || got != num || typ != protowire.BytesType {
		return nil, false
	}
	v, m := protowire.ConsumeBytes(b[n:])
	if m < 0 || n+m != len(b) {
		return nil, false
	}
	return v, true
}

// lonePut returns the put of a transaction that is one put and nothing
// else (no compares, no failure branch, no fields unknown to this
// version), or nil.
func lonePut(txn *pb.TxnRequest) *pb.PutRequest {
	if len(txn.Compare) > 0 || len(txn.Success) != 1 || len(txn.Failure) > 0 {
		return nil
	}
	op := txn.Success[0]
	put := op.GetRequestPut()
	if put == nil ||
		len(txn.ProtoReflect().GetUnknown()) > 0 ||
		len(op.ProtoReflect().GetUnknown()) > 0 ||
		len(put.ProtoReflect().GetUnknown()) > 0 {
		return nil
	}
	return put
}

// lonePutSize is the size of the encoding of a transaction of one put.
func lonePutSize(put *pb.PutRequest) int {
	op := protowire.SizeTag(fieldRequestOpPut) + protowire.SizeBytes(putSize(put))
	return protowire.SizeTag(fieldTxnSuccess) + protowire.SizeBytes(op)
}

// putSize is the size of put's encoding.
func putSize(put *pb.PutRequest) int {
	return bytesFieldSize(fieldPutKey, put.Key) +
		bytesFieldSize(fieldPutValue, put.Value) +
		varintFieldSize(fieldPutLease, uint64(put.Lease)) +
		varintFieldSize(fieldPutPrevKv, protowire.EncodeBool(put.PrevKv)) +
		varintFieldSize(fieldPutIgnoreValue, protowire.EncodeBool(put.IgnoreValue)) +
		varintFieldSize(fieldPutIgnoreLease, protowire.EncodeBool(put.IgnoreLease))
}

// writeSize is the size of an encoded Write. Like protobuf, the encoding
// leaves out zero values (revision 0, an empty transaction).
func writeSize(rev int64, txnSize int) int {
	n := varintFieldSize(fieldWriteRevision, uint64(rev))
	if txnSize > 0 {
		n += protowire.SizeTag(fieldWriteTxn) + protowire.SizeBytes(txnSize)
	}
	return n
}

// encodeWriteBatch encodes the DataCommand of writes with revisions first,
// first+1, ... and the given transactions.
func encodeWriteBatch(first int64, txns []entryTxn) []byte {
	inner := 0
	for i, t := range txns {
		inner += protowire.SizeTag(fieldWriteBatchWrites) + protowire.SizeBytes(writeSize(first+int64(i), t.size))
	}
	b := make([]byte, 0, protowire.SizeTag(fieldDataCommandWriteBatch)+protowire.SizeBytes(inner))
	b = protowire.AppendTag(b, fieldDataCommandWriteBatch, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(inner))
	for i, t := range txns {
		rev := first + int64(i)
		b = protowire.AppendTag(b, fieldWriteBatchWrites, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(writeSize(rev, t.size)))
		b = appendVarintField(b, fieldWriteRevision, uint64(rev))
		if t.size > 0 {
			b = protowire.AppendTag(b, fieldWriteTxn, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(t.size))
			b = t.appendTo(b)
		}
	}
	return b
}

// The field encoders leave out zero values, as protobuf does.

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func bytesFieldSize(num protowire.Number, v []byte) int {
	if len(v) == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(v))
}

func varintFieldSize(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

var errBadCommand = errors.New("shard: malformed data command")

// decodeDataCommand calls write for each write of a write batch (txn
// aliases cmd), or returns any other command (compact, resolved).
func decodeDataCommand(cmd []byte, write func(rev int64, txn []byte) error) (*basaltpb.DataCommand, error) {
	num, typ, n := protowire.ConsumeTag(cmd)
	if n < 0 || typ != protowire.BytesType {
		return nil, errBadCommand
	}
	body, m := protowire.ConsumeBytes(cmd[n:])
	if m < 0 || n+m != len(cmd) {
		return nil, errBadCommand
	}
	if num != fieldDataCommandWriteBatch {
		var c basaltpb.DataCommand
		if err := proto.Unmarshal(cmd, &c); err != nil {
			return nil, fmt.Errorf("%w: %v", errBadCommand, err)
		}
		if c.Command == nil {
			return nil, fmt.Errorf("%w: field %d", errBadCommand, num)
		}
		return &c, nil
	}
	for len(body) > 0 {
		num, typ, n := protowire.ConsumeTag(body)
		if n < 0 || num != fieldWriteBatchWrites || typ != protowire.BytesType {
			return nil, errBadCommand
		}
		w, m := protowire.ConsumeBytes(body[n:])
		if m < 0 {
			return nil, errBadCommand
		}
		body = body[n+m:]
		var rev int64
		var txn []byte
		for len(w) > 0 {
			num, typ, n := protowire.ConsumeTag(w)
			if n < 0 {
				return nil, errBadCommand
			}
			w = w[n:]
			switch {
			case num == fieldWriteRevision && typ == protowire.VarintType:
				v, m := protowire.ConsumeVarint(w)
				if m < 0 {
					return nil, errBadCommand
				}
				rev, w = int64(v), w[m:]
			case num == fieldWriteTxn && typ == protowire.BytesType:
				v, m := protowire.ConsumeBytes(w)
				if m < 0 {
					return nil, errBadCommand
				}
				txn, w = v, w[m:]
			default:
				m := protowire.ConsumeFieldValue(num, typ, w)
				if m < 0 {
					return nil, errBadCommand
				}
				w = w[m:]
			}
		}
		if err := write(rev, txn); err != nil {
			return nil, err
		}
	}
	return nil, nil
}
