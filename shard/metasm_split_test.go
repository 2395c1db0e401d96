package shard

import (
	"testing"

	"github.com/basaltdb/basalt/proto/basaltpb"
)

func TestRecordSplit(t *testing.T) {
	state := func() *basaltpb.MetaState {
		return &basaltpb.MetaState{Shards: []*basaltpb.ShardDescriptor{{ShardId: 2, End: []byte("m"), Epoch: 3}, {ShardId: 5, Start: []byte("m"), Epoch: 1}}}
	}
	child := func(id uint64, start, end string) *basaltpb.RecordSplit {
		return &basaltpb.RecordSplit{ParentId: 2, Child: &basaltpb.ShardDescriptor{ShardId: id, Start: []byte(start), End: []byte(end), Epoch: 1}}
	}
	s := state()
	if code, changed := recordSplit(s, child(7, "f", "m")); code != basaltpb.ErrorCode_OK || !changed {
		t.Fatalf("split of [-inf, m) at f: %v %v", code, changed)
	}
	if p := s.Shards[0]; string(p.End) != "f" || p.Epoch != 4 || len(s.Shards) != 3 || s.LastShardId != 7 {
		t.Fatalf("after the split: %v", s)
	}
	// Recorded again (the child's replicas record it too): no change.
	if code, changed := recordSplit(s, child(7, "f", "m")); code != basaltpb.ErrorCode_OK || changed || s.Shards[0].Epoch != 4 {
		t.Fatalf("second record: %v %v %v", code, changed, s)
	}
	for _, bad := range []*basaltpb.RecordSplit{
		child(8, "", "m"),  // at the parent's start
		child(8, "m", ""),  // at its end
		child(8, "q", "z"), // outside
		child(8, "c", "z"), // the child's end is not the parent's
		{ParentId: 9, Child: &basaltpb.ShardDescriptor{ShardId: 8, Start: []byte("c")}}, // no such parent
	} {
		s := state()
		if code, changed := recordSplit(s, bad); code != basaltpb.ErrorCode_WRONG_SHARD || changed || len(s.Shards) != 2 {
			t.Errorf("record %v: %v %v, want WRONG_SHARD and no change", bad, code, changed)
		}
	}
}
