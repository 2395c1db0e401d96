package router_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/basaltdb/basalt/internal/testnode"
)

func post(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("%s: %v: %s", url, err, data)
	}
	return resp.StatusCode, out
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestHTTPGateway drives the JSON gateway on the client port as curl would.
func TestHTTPGateway(t *testing.T) {
	n := testnode.Start(t)
	base := n.ClientURL

	code, out := post(t, base+"/v3/kv/put", `{"key":"`+b64("foo")+`","value":"`+b64("bar")+`"}`)
	if code != 200 || out["header"].(map[string]any)["revision"] != "2" {
		t.Fatalf("put: %d %v", code, out)
	}
	code, out = post(t, base+"/v3/kv/range", `{"key":"`+b64("foo")+`"}`)
	kvs := out["kvs"].([]any)
	if code != 200 || kvs[0].(map[string]any)["value"] != b64("bar") || out["count"] != "1" {
		t.Fatalf("range: %d %v", code, out)
	}
	code, out = post(t, base+"/v3/kv/txn", `{"compare":[{"key":"`+b64("foo")+`","target":"VALUE","result":"EQUAL","value":"`+b64("bar")+`"}],"success":[{"request_put":{"key":"`+b64("foo")+`","value":"`+b64("baz")+`"}}]}`)
	if code != 200 || out["succeeded"] != true {
		t.Fatalf("txn: %d %v", code, out)
	}
	code, out = post(t, base+"/v3/kv/deleterange", `{"key":"`+b64("foo")+`","prev_kv":true}`)
	if code != 200 || out["deleted"] != "1" || out["prev_kvs"].([]any)[0].(map[string]any)["value"] != b64("baz") {
		t.Fatalf("deleterange: %d %v", code, out)
	}
	code, out = post(t, base+"/v3/kv/compaction", `{"revision":"3","physical":true}`)
	if code != 200 {
		t.Fatalf("compaction: %d %v", code, out)
	}
	// Errors come back as etcd's gateway shows them: gRPC code and message.
	code, out = post(t, base+"/v3/kv/range", `{"key":"`+b64("foo")+`","revision":"2"}`)
	if code != 400 || out["message"] != "etcdserver: mvcc: required revision has been compacted" || out["code"] != float64(11) {
		t.Fatalf("compacted range: %d %v", code, out)
	}
	code, out = post(t, base+"/v3/kv/put", `{"value":"`+b64("x")+`"}`)
	if code != 400 || out["message"] != "etcdserver: key is not provided" {
		t.Fatalf("empty key: %d %v", code, out)
	}
	// The old v3beta paths still work.
	if code, _ = post(t, base+"/v3beta/kv/range", `{"key":"`+b64("foo")+`"}`); code != 200 {
		t.Fatalf("v3beta range: %d", code)
	}

	for path, want := range map[string]string{
		"/health":  `{"health":"true","reason":""}`,
		"/version": `{"basalt":"0.1.0","etcdcluster":"3.6.0","etcdserver":"3.6.0"}`,
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.TrimSpace(string(body)) != want {
			t.Fatalf("%s: %s, want %s", path, body, want)
		}
	}
}
