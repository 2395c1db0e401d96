package txncoord

import (
	"fmt"
	"testing"

	"github.com/basaltdb/basalt/proto/basaltpb"
)

func TestRangeCacheRoutesKeys(t *testing.T) {
	c := NewRangeCache([]*basaltpb.ShardDescriptor{
		{ShardId: 3, Start: []byte("m"), End: []byte("t")},
		{ShardId: 2, Start: nil, End: []byte("m")},
		{ShardId: 4, Start: []byte("t"), End: nil},
	})
	for key, want := range map[string]uint64{"\x00": 2, "a": 2, "lzz": 2, "m": 3, "s\xff": 3, "t": 4, "\xff\xff": 4} {
		if got := c.Lookup([]byte(key)).ShardId; got != want {
			t.Errorf("Lookup(%q) = %d, want %d", key, got, want)
		}
	}
	ids := func(key, end string) string {
		var e []byte
		if end != "" {
			e = []byte(end)
		}
		var out []uint64
		for _, d := range c.Overlapping([]byte(key), e) {
			out = append(out, d.ShardId)
		}
		return fmt.Sprint(out)
	}
	cases := []struct{ key, end, want string }{
		{"a", "", "[2]"},
		{"a", "b", "[2]"},
		{"a", "m", "[2]"},
		{"a", "m\x00", "[2 3]"},
		{"n", "\x00", "[3 4]"},
		{"\x00", "\x00", "[2 3 4]"},
		{"z", "a", "[4]"},
	}
	for _, c := range cases {
		if got := ids(c.key, c.end); got != c.want {
			t.Errorf("Overlapping(%q, %q) = %s, want %s", c.key, c.end, got, c.want)
		}
	}
}
