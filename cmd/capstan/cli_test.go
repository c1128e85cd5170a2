package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongotest"
)

func TestMain(m *testing.M) { mongotest.Main(m) }

// capstan runs the command line with args and stdin, returning stdout.
func capstan(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func target(t *testing.T) []string {
	return []string{"--mongo-uri", mongotest.URI(t), "--database", mongotest.DatabaseName(t)}
}

func mustRun(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := capstan(t, stdin, args...)
	if err != nil {
		t.Fatalf("capstan %v: %v\n%s", args, err, out)
	}
	return out
}

const widgetYAML = `kind: Widget
metadata:
  name: hello
  labels: {app: demo}
spec:
  size: 3
  color: blue
`

func getWidget(t *testing.T, db []string) *meta.Unstructured {
	t.Helper()
	out := mustRun(t, "", append([]string{"get", "widget", "hello", "-o", "json"}, db...)...)
	u := &meta.Unstructured{}
	if err := json.Unmarshal([]byte(out), u); err != nil {
		t.Fatalf("decode %q: %v", out, err)
	}
	return u
}

func TestApplyGetDeleteRoundTrip(t *testing.T) {
	db := target(t)
	if out := mustRun(t, widgetYAML, append([]string{"apply", "-f", "-"}, db...)...); out != "widget/hello created\n" {
		t.Fatalf("first apply: %q", out)
	}
	if out := mustRun(t, widgetYAML, append([]string{"apply", "-f", "-"}, db...)...); out != "widget/hello unchanged\n" {
		t.Fatalf("second apply: %q", out)
	}
	w := getWidget(t, db)
	if w.Generation != 1 || w.Namespace != "default" || w.Labels["app"] != "demo" || w.UID == "" {
		t.Fatalf("stored object: %+v", w.ObjectMeta)
	}
	bigger := strings.Replace(widgetYAML, "size: 3", "size: 4", 1)
	if out := mustRun(t, bigger, append([]string{"apply", "-f", "-"}, db...)...); out != "widget/hello configured\n" {
		t.Fatalf("changed apply: %q", out)
	}
	w2 := getWidget(t, db)
	if w2.Generation != 2 || w2.UID != w.UID {
		t.Fatalf("after change: generation %d uid %s (was %s)", w2.Generation, w2.UID, w.UID)
	}
	spec := w2.Fields["spec"].(map[string]any)
	if spec["size"].(json.Number).String() != "4" {
		t.Fatalf("spec after change: %v", spec)
	}
	for _, kind := range []string{"widget", "Widget", "widgets"} {
		table := mustRun(t, "", append([]string{"get", kind}, db...)...)
		if !strings.Contains(table, "default     hello") {
			t.Fatalf("get %s table:\n%s", kind, table)
		}
	}
	if out := mustRun(t, "", append([]string{"delete", "widget", "hello"}, db...)...); out != "widget/hello deleted\n" {
		t.Fatalf("delete: %q", out)
	}
	_, err := capstan(t, "", append([]string{"get", "widget", "hello"}, db...)...)
	if !errs.IsNotFound(err) {
		t.Fatalf("get after delete: %v, want NotFound", err)
	}
}

func TestApplyBadInputStoresNothing(t *testing.T) {
	db := target(t)
	mustRun(t, widgetYAML, append([]string{"apply", "-f", "-"}, db...)...)
	before := getWidget(t, db)
	cases := []struct {
		name, doc, field string
	}{
		{"invalid name", "kind: Widget\nmetadata: {name: Bad_Name}\n", "metadata.name"},
		{"unknown metadata field", "kind: Widget\nmetadata: {name: hello, nmae: x}\n", "metadata.nmae"},
		{"labels of the wrong type", "kind: Widget\nmetadata: {name: hello, labels: [a]}\n", "metadata.labels"},
		{"bad label value", "kind: Widget\nmetadata: {name: hello, labels: {app: 'has spaces'}}\n", "metadata.labels[app]"},
		{"kind missing", "metadata: {name: other}\n", "kind"},
		{"reserved field", "kind: Widget\nmetadata: {name: hello}\n_id: x\n", "_id"},
		{"second document bad", widgetYAML + "---\nkind: Widget\nmetadata: {name: 'UPPER'}\n", "metadata.name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := capstan(t, c.doc, append([]string{"apply", "-f", "-"}, db...)...)
			if !errs.IsInvalidArgument(err) {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			if f := errs.FieldOf(err); !strings.HasSuffix(f, c.field) {
				t.Fatalf("field = %q, want …%q (err %v)", f, c.field, err)
			}
		})
	}
	_, err := capstan(t, "kind: Widget\nmetadata: {name: x\n", append([]string{"apply", "-f", "-"}, db...)...)
	if !errs.IsInvalidArgument(err) {
		t.Fatalf("malformed YAML: %v, want InvalidArgument", err)
	}
	after := getWidget(t, db)
	if after.ResourceVersion != before.ResourceVersion || after.Generation != before.Generation {
		t.Fatalf("bad input changed the stored object: %+v → %+v", before.ObjectMeta, after.ObjectMeta)
	}
	list := mustRun(t, "", append([]string{"get", "widget", "-o", "json"}, db...)...)
	var items []map[string]any
	if err := json.Unmarshal([]byte(list), &items); err != nil || len(items) != 1 {
		t.Fatalf("objects after bad input: %s (%v)", list, err)
	}
	if _, err := capstan(t, "", append([]string{"get", "widget", "-o", "xml"}, db...)...); errs.FieldOf(err) != "output" {
		t.Fatalf("bad output format: %v", err)
	}
}

func TestRunServesEmbeddedStoreUntilCancelled(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	dir := filepath.Join(t.TempDir(), "data")
	root := newRootCmd()
	var out syncBuffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"run", "--data-dir", dir, "--listen", addr, "--metrics-bind-address", "0",
		"--health-probe-bind-address", "127.0.0.1:0", "--log-level", "error"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	uri := "mongodb://" + addr + "/?directConnection=true"
	deadline := time.Now().Add(90 * time.Second)
	for {
		_, err := capstan(t, widgetYAML, "apply", "-f", "-", "--mongo-uri", uri, "--timeout", "5s")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("store never answered: %v\n%s", err, out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := mustRun(t, "", "get", "widget", "hello", "-o", "yaml", "--mongo-uri", uri); !strings.Contains(got, "size: 3") {
		t.Fatalf("get: %s", got)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned %v\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("run did not stop after cancel")
	}
	if !strings.Contains(out.String(), "store listening on "+uri) {
		t.Fatalf("run output lacks the address:\n%s", out.String())
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, c := range []struct {
		args  []string
		field string
	}{
		{[]string{"run", "--store", "nosql"}, "store"},
		{[]string{"run", "--store", "mongo"}, "mongo-uri"},
		{[]string{"run", "--store", "memory", "--log-level", "loud"}, "log-level"},
		{[]string{"run", "--store", "memory", "--loadtest-dir", filepath.Join(t.TempDir(), "missing")}, "loadtest-dir"},
	} {
		_, err := capstan(t, "", c.args...)
		if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != c.field {
			t.Errorf("%v: %v, want InvalidArgument on %s", c.args, err, c.field)
		}
	}
}
