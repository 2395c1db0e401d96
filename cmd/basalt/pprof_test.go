package main

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestEnablePprof: with --enable-pprof the client URL serves Go's profiles,
// the mutex profile sampled as etcd samples it (one contended unlock in
// five); without it there is nothing under /debug/pprof/.
func TestEnablePprof(t *testing.T) {
	off := startProcess(t, t.TempDir(), freeAddr(t), freeAddr(t))
	if code, _ := get(t, off.clientURL+"/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("/debug/pprof/ without --enable-pprof: status %d, want 404", code)
	}
	off.stop()

	on := startProcess(t, t.TempDir(), freeAddr(t), freeAddr(t), "--enable-pprof")
	code, body := get(t, on.clientURL+"/debug/pprof/mutex?debug=1")
	if code != http.StatusOK || !strings.Contains(string(body), "sampling period=5\n") {
		t.Fatalf("mutex profile: status %d, want 200 and a sampling period of 5:\n%s", code, body)
	}
	code, body = get(t, on.clientURL+"/debug/pprof/profile?seconds=1")
	if code != http.StatusOK || !bytes.HasPrefix(body, []byte{0x1f, 0x8b}) {
		t.Fatalf("CPU profile: status %d, want 200 and a gzipped profile (%d bytes)", code, len(body))
	}
	on.stop()
}

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}
