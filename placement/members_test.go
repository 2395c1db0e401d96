package placement

import (
	"strings"
	"testing"
)

func TestParseInitialCluster(t *testing.T) {
	ms, err := ParseInitialCluster("a=http://127.0.0.1:1,b=http://127.0.0.1:2,a=http://127.0.0.1:3", "tok")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Name != "a" || len(ms[0].PeerUrls) != 2 || ms[1].Name != "b" {
		t.Fatalf("members: %v", ms)
	}
	// etcd's ids: the same peer URLs in any order and the same token give
	// the same id; another token another.
	if ms[0].Id != MemberID([]string{"http://127.0.0.1:3", "http://127.0.0.1:1"}, "tok") {
		t.Fatal("member id depends on the order of peer URLs")
	}
	if ms[0].Id == MemberID(ms[0].PeerUrls, "other") {
		t.Fatal("member id does not depend on the cluster token")
	}
	for _, bad := range []struct{ in, want string }{
		{"", "is not name=peer-url"},
		{"a", "is not name=peer-url"},
		{"=http://127.0.0.1:1", "is not name=peer-url"},
		{"a=", "is not name=peer-url"},
		{"a=ftp://127.0.0.1:1", "only http://"},
		{"a=http://127.0.0.1", "bad peer URL"},
		{"a=http://127.0.0.1:1,b=http://127.0.0.1:1", "have the same peer URLs"},
	} {
		if _, err := ParseInitialCluster(bad.in, "tok"); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("ParseInitialCluster(%q) = %v, want an error with %q", bad.in, err, bad.want)
		}
	}
}
