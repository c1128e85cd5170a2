package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"

	"github.com/capstanhq/capstan/examples/website/api"
)

// testFlags are the flags main would parse, with every server on a free
// loopback port and data under dir.
func testFlags(dir string) flags {
	return flags{
		dataDir:     dir,
		listen:      "127.0.0.1:0",
		metricsAddr: "127.0.0.1:0",
		healthAddr:  "127.0.0.1:0",
		database:    "website",
		workers:     2,
	}
}

// startOperator runs op until the test ends.
func startOperator(t *testing.T, op *operator) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- op.mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("manager: %v", err)
			}
		case <-time.After(time.Minute):
			t.Error("manager did not stop")
		}
		op.close()
	})
	return done
}

// waitReady waits until the Website key is Ready for its generation.
func waitReady(t *testing.T, op *operator, key meta.Key) *api.Website {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last error
	for time.Now().Before(deadline) {
		site := &api.Website{}
		err := op.st.Get(context.Background(), key, site)
		if err == nil {
			c := meta.FindCondition(site.Status.Conditions, api.ConditionReady)
			if c != nil && c.Status == meta.ConditionTrue && c.ObservedGeneration == site.Generation {
				return site
			}
			err = fmt.Errorf("status %+v", site.Status)
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("Website %s not ready within a minute: %v", key, last)
	return nil
}

func writeYAML(t *testing.T, dir, body string) string {
	t.Helper()
	path := filepath.Join(dir, "site.yaml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestMemoryStoreWithApply(t *testing.T) {
	dir := t.TempDir()
	f := testFlags(dir)
	f.store = "memory"
	f.apply = filepath.Join("..", "..", "website.yaml") // the example the README applies
	op, err := newOperator(context.Background(), f, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	startOperator(t, op)
	site := waitReady(t, op, meta.Key{Namespace: "default", Name: "blog"})
	if site.Spec.Replicas != 3 || site.Status.ReadyReplicas != 3 || site.Labels["team"] != "docs" {
		t.Errorf("applied Website %+v %+v", site.Spec, site.Status)
	}
	if got, _ := op.dns.Records(context.Background()); got["blog.example.com"] != "default/blog" {
		t.Errorf("DNS records %v", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "dns.json")); !os.IsNotExist(err) {
		t.Errorf("the memory store keeps DNS records in memory, but dns.json: %v", err)
	}
}

func TestEmbeddedStore(t *testing.T) {
	dir := t.TempDir()
	f := testFlags(dir)
	f.apply = writeYAML(t, dir, `
kind: Website
metadata:
  name: shop
  namespace: prod
spec:
  domain: shop.example.com
  replicas: 2
`)
	op, err := newOperator(context.Background(), f, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	startOperator(t, op)
	waitReady(t, op, meta.Key{Namespace: "prod", Name: "shop"})
	data, err := os.ReadFile(filepath.Join(dir, "dns.json"))
	if err != nil {
		t.Fatalf("DNS records file: %v", err)
	}
	var records map[string]string
	if err := json.Unmarshal(data, &records); err != nil || records["shop.example.com"] != "prod/shop" {
		t.Errorf("dns.json %s (%v), want shop.example.com held by prod/shop", data, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "store")); err != nil {
		t.Errorf("embedded store data: %v", err)
	}
}

func TestApplyRejectsOtherKinds(t *testing.T) {
	dir := t.TempDir()
	f := testFlags(dir)
	f.store = "memory"
	f.apply = writeYAML(t, dir, "kind: Widget\nmetadata:\n  name: w\n")
	op, err := newOperator(context.Background(), f, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = op.mgr.Start(ctx)
	op.close()
	if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != "document[0].kind" {
		t.Fatalf("manager ended with %v, want InvalidArgument on document[0].kind", err)
	}
}

func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*flags)
		field string
	}{
		{"unknown store", func(f *flags) { f.store = "etcd" }, "store"},
		{"mongo without uri", func(f *flags) { f.store = "mongo" }, "mongo-uri"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := testFlags(t.TempDir())
			tc.edit(&f)
			_, err := newOperator(context.Background(), f, testr.New(t))
			if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != tc.field {
				t.Fatalf("newOperator: %v, want InvalidArgument on %s", err, tc.field)
			}
		})
	}
}
