package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/basaltdb/basalt/internal/testnode"
)

// basaltctl shard split and shards against a node: the listing follows the
// splits, and bad requests fail with a message that says why.
func TestShardCommands(t *testing.T) {
	n := testnode.Start(t)
	ctx := context.Background()
	cl := n.Client(t)
	for _, k := range []string{"a", "b", "m", "n", "z"} {
		if _, err := cl.Put(ctx, k, "v"); err != nil {
			t.Fatal(err)
		}
	}
	endpoint := strings.TrimPrefix(n.ClientURL, "http://")
	ctl := func(args ...string) (string, error) {
		var stdout, stderr bytes.Buffer
		err := run(ctx, append(args, "--endpoint", endpoint), &stdout, &stderr)
		return stdout.String() + stderr.String(), err
	}
	out, err := ctl("shard", "split", "m")
	if err != nil || !strings.Contains(out, `split at "m": shard 2 [-inf, "m"), shard 3 ["m", +inf)`) {
		t.Fatalf("shard split m: %v\n%s", err, out)
	}
	if out, err = ctl("shard", "split", "n"); err != nil {
		t.Fatalf("shard split n: %v\n%s", err, out)
	}
	out, err = ctl("shards")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("shards lists %d lines, want a header and 3 shards:\n%s", len(lines), out)
	}
	// Columns: shard, start, end, epoch, size, keys, ...
	for i, want := range []struct{ start, end, epoch, keys string }{
		{"-inf", `"m"`, "2", "2"}, {`"m"`, `"n"`, "2", "1"}, {`"n"`, "+inf", "1", "2"},
	} {
		f := strings.Fields(lines[i+1])
		if f[1] != want.start || f[2] != want.end || f[3] != want.epoch || f[5] != want.keys {
			t.Errorf("shard line %q, want span [%s, %s) epoch %s with %s keys", lines[i+1], want.start, want.end, want.epoch, want.keys)
		}
	}
	// Every key still reads back, across the shards.
	resp, err := cl.Get(ctx, "", clientv3.WithFromKey())
	if err != nil || resp.Count != 5 {
		t.Fatalf("range over the shards: %v, %v", resp, err)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"shard", "split", "m"}, "a shard already starts at this key"},
		{[]string{"shard", "split", ""}, "split key is empty"},
		{[]string{"shard", "split"}, "usage: basaltctl shard split KEY"},
		{[]string{"shard", "merge", "m"}, "usage: basaltctl shard split KEY"},
		{[]string{"shards", "extra"}, "usage: basaltctl shards"},
	} {
		out, err := ctl(c.args...)
		if err == nil || !strings.Contains(err.Error()+out, c.want) {
			t.Errorf("basaltctl %v: %v %s, want an error with %q", c.args, err, out, c.want)
		}
	}
	var stdout, stderr bytes.Buffer
	if err := run(ctx, []string{"shards", "--endpoint", "127.0.0.1:1", "--timeout", "1s"}, &stdout, &stderr); err == nil {
		t.Error("basaltctl shards against nothing must fail")
	}
}
