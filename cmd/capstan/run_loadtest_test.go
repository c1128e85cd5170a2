package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestRunLoadTestDir runs `capstan run --loadtest-dir DIR` on the embedded
// store and applies LoadTests with `capstan apply`: one whose ammo file is
// in DIR completes with a shot per line, one whose file leaves DIR fails
// naming the field.
func TestRunLoadTestDir(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer srv.Close()
	base := t.TempDir()
	files := filepath.Join(base, "files")
	os.MkdirAll(filepath.Join(files, "ammo"), 0o755)
	os.WriteFile(filepath.Join(files, "ammo", "requests.jsonl"), []byte("{\"uri\":\"/1\"}\n{\"uri\":\"/2\"}\n{\"uri\":\"/3\"}\n"), 0o644)
	os.WriteFile(filepath.Join(base, "outside.jsonl"), []byte("{\"uri\":\"/x\"}\n"), 0o644)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	root := newRootCmd()
	var out syncBuffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"run", "--data-dir", filepath.Join(base, "data"), "--listen", addr, "--metrics-bind-address", "0",
		"--health-probe-bind-address", "0", "--log-level", "error", "--loadtest-dir", files})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run returned %v\n%s", err, out.String())
			}
		case <-time.After(60 * time.Second):
			t.Error("run did not stop after cancel")
		}
	}()
	uri := "mongodb://" + addr + "/?directConnection=true"

	apply := func(name, file string) {
		doc := `kind: LoadTest
metadata: {name: ` + name + `}
spec:
  pools:
    - id: web
      gun: {type: http, target: "` + srv.URL + `"}
      ammo: {type: file, file: "` + file + `", passes: 1}
      rps: [{type: const, ops: 50, duration: 10s}]
      instances: 2
`
		deadline := time.Now().Add(90 * time.Second)
		for {
			_, err := capstan(t, doc, "apply", "-f", "-", "--mongo-uri", uri, "--timeout", "5s")
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("apply %s: %v\n%s", name, err, out.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	type status struct {
		Phase, Reason, Message string
		Results                *struct{ Requests int64 }
	}
	final := func(name string) status {
		deadline := time.Now().Add(60 * time.Second)
		for {
			js, err := capstan(t, "", "get", "loadtest", name, "-o", "json", "--mongo-uri", uri)
			var lt struct{ Status status }
			if err == nil && json.Unmarshal([]byte(js), &lt) == nil {
				switch lt.Status.Phase {
				case "Succeeded", "Failed", "Cancelled":
					return lt.Status
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not end: %v %s\n%s", name, err, js, out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	apply("from-file", "ammo/requests.jsonl")
	if s := final("from-file"); s.Phase != "Succeeded" || s.Results == nil || s.Results.Requests != 3 {
		t.Fatalf("from-file: %+v", s)
	}
	apply("escape", "../outside.jsonl")
	if s := final("escape"); s.Phase != "Failed" || s.Reason != "InvalidSpec" || !strings.Contains(s.Message, "spec.pools[0].ammo.file: ") {
		t.Fatalf("escape: %+v", s)
	}
	if n := hits.Load(); n != 3 {
		t.Fatalf("the target saw %d requests, want 3", n)
	}
}
