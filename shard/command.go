package shard

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/basaltpb"
)

// Write batches are on every write's path, so they are encoded and decoded
// by hand, straight from the marshaled transactions to the entry and back,
// without building basaltpb.Write messages. The bytes are exactly
// basaltpb.DataCommand{write_batch: WriteBatch{writes: [...]}}, so the
// .proto stays the description of the format (TestWriteBatchEncoding).

// Field numbers of basalt.proto.
const (
	fieldDataCommandWriteBatch = 1
	fieldWriteBatchWrites      = 1
	fieldWriteRevision         = 1
	fieldWriteTxn              = 2
)

// writeSize is the size of an encoded Write. Like protobuf, the encoding
// leaves out zero values (revision 0, an empty transaction).
func writeSize(rev int64, txn []byte) int {
	n := 0
	if rev != 0 {
		n += protowire.SizeTag(fieldWriteRevision) + protowire.SizeVarint(uint64(rev))
	}
	if len(txn) > 0 {
		n += protowire.SizeTag(fieldWriteTxn) + protowire.SizeBytes(len(txn))
	}
	return n
}

// encodeWriteBatch encodes the DataCommand of writes with revisions first,
// first+1, ... and the given marshaled transactions.
func encodeWriteBatch(first int64, txns [][]byte) []byte {
	inner := 0
	for i, t := range txns {
		inner += protowire.SizeTag(fieldWriteBatchWrites) + protowire.SizeBytes(writeSize(first+int64(i), t))
	}
	b := make([]byte, 0, protowire.SizeTag(fieldDataCommandWriteBatch)+protowire.SizeBytes(inner))
	b = protowire.AppendTag(b, fieldDataCommandWriteBatch, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(inner))
	for i, t := range txns {
		rev := first + int64(i)
		b = protowire.AppendTag(b, fieldWriteBatchWrites, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(writeSize(rev, t)))
		if rev != 0 {
			b = protowire.AppendTag(b, fieldWriteRevision, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(rev))
		}
		if len(t) > 0 {
			b = protowire.AppendTag(b, fieldWriteTxn, protowire.BytesType)
			b = protowire.AppendBytes(b, t)
		}
	}
	return b
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
