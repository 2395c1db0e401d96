package mvcc

import (
	"bytes"
	"testing"
)

func compareRevDesc(a, b Revision) int {
	switch {
	case a == b:
		return 0
	case a.GreaterThan(b):
		return -1 // newer sorts first
	default:
		return 1
	}
}

func sign(x int) int {
	switch {
	case x < 0:
		return -1
	case x > 0:
		return 1
	}
	return 0
}

// FuzzDataKey checks that data keys round-trip and that the comparer orders
// them by user key, then newest revision first, whatever bytes the user keys
// hold.
func FuzzDataKey(f *testing.F) {
	f.Add([]byte("foo"), int64(2), int64(0), []byte("foo"), int64(3), int64(1))
	f.Add([]byte("a"), int64(5), int64(0), []byte("a\x00"), int64(1), int64(0))
	f.Add([]byte("ab"), int64(1<<40), int64(7), []byte("a"), int64(1), int64(0))
	f.Add([]byte{0x11}, int64(0), int64(0), []byte{0x00, 0x11}, int64(9), int64(9))
	f.Fuzz(func(t *testing.T, k1 []byte, m1, s1 int64, k2 []byte, m2, s2 int64) {
		if m1 < 0 || s1 < 0 || m2 < 0 || s2 < 0 {
			t.Skip("revisions are not negative")
		}
		r1, r2 := Revision{m1, s1}, Revision{m2, s2}
		e1, e2 := appendDataKey(nil, k1, r1), appendDataKey(nil, k2, r2)

		for _, c := range []struct {
			enc []byte
			key []byte
			rev Revision
		}{{e1, k1, r1}, {e2, k2, r2}} {
			gotKey, gotRev, ok := decodeDataKey(c.enc)
			if !ok || !bytes.Equal(gotKey, c.key) || gotRev != c.rev {
				t.Fatalf("round trip of %q@%v gave %q@%v ok=%v", c.key, c.rev, gotKey, gotRev, ok)
			}
			prefix := c.enc[:Split(c.enc)]
			if !bytes.Equal(prefix, appendDataPrefix(nil, c.key)) {
				t.Fatalf("Split(%q) = %q, want the key's prefix", c.enc, prefix)
			}
			if Split(prefix) != len(prefix) {
				t.Fatalf("a bare prefix must split as a whole: %q", prefix)
			}
			if Compare(prefix, c.enc) >= 0 {
				t.Fatalf("bare prefix %q must sort before its version %q", prefix, c.enc)
			}
		}

		want := sign(bytes.Compare(k1, k2))
		if want == 0 {
			want = compareRevDesc(r1, r2)
		}
		if got := sign(Compare(e1, e2)); got != want {
			t.Fatalf("Compare(%q@%v, %q@%v) = %d, want %d", k1, r1, k2, r2, got, want)
		}
		if got := sign(Compare(e2, e1)); got != -want {
			t.Fatalf("Compare is not antisymmetric for %q@%v, %q@%v", k1, r1, k2, r2)
		}
		// Prefix order agrees with key order.
		p1, p2 := appendDataPrefix(nil, k1), appendDataPrefix(nil, k2)
		if got := sign(Compare(p1, p2)); got != sign(bytes.Compare(k1, k2)) {
			t.Fatalf("prefix order of %q, %q is %d", k1, k2, got)
		}
		// Abbreviated keys never contradict Compare.
		a1, a2 := Comparer.AbbreviatedKey(e1), Comparer.AbbreviatedKey(e2)
		if (a1 < a2 && want > 0) || (a1 > a2 && want < 0) {
			t.Fatalf("AbbreviatedKey contradicts Compare for %q, %q", e1, e2)
		}
		if Comparer.Equal(e1, e2) != (want == 0) {
			t.Fatalf("Equal disagrees with Compare for %q, %q", e1, e2)
		}
	})
}

func TestChangeKeyOrder(t *testing.T) {
	revs := []Revision{{1, 0}, {1, 1}, {2, 0}, {255, 3}, {256, 0}, {1 << 40, 0}}
	for i := 1; i < len(revs); i++ {
		a, b := appendChangeKey(nil, revs[i-1]), appendChangeKey(nil, revs[i])
		if Compare(a, b) >= 0 {
			t.Fatalf("change key of %v must sort before %v", revs[i-1], revs[i])
		}
		if got, ok := decodeChangeKey(b); !ok || got != revs[i] {
			t.Fatalf("decodeChangeKey = %v %v, want %v", got, ok, revs[i])
		}
	}
}

func TestValueRoundTrip(t *testing.T) {
	for _, v := range []version{
		{create: 2, ver: 1, value: []byte("v")},
		{create: 1 << 50, ver: 3, lease: -5, value: nil},
		{create: 7, ver: 9, lease: 1 << 62, value: []byte{0, 1, 2}},
		{tombstone: true},
	} {
		got, err := decodeValue(appendValue(nil, v))
		if err != nil {
			t.Fatal(err)
		}
		if got.tombstone != v.tombstone || got.create != v.create || got.ver != v.ver || got.lease != v.lease || !bytes.Equal(got.value, v.value) {
			t.Fatalf("round trip of %+v gave %+v", v, got)
		}
	}
	if _, err := decodeValue([]byte{9}); err == nil {
		t.Fatal("an unknown kind must be an error")
	}
	if _, err := decodeValue([]byte{kindPut, 0x80}); err == nil {
		t.Fatal("a truncated varint must be an error")
	}
}
