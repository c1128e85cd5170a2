package dns_test

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/capstanhq/capstan/pkg/errs"

	"github.com/capstanhq/capstan/examples/website/dns"
)

func registries(t *testing.T) map[string]func() dns.Registry {
	dir := t.TempDir()
	n := 0
	return map[string]func() dns.Registry{
		"Memory": func() dns.Registry { return &dns.Memory{} },
		"File": func() dns.Registry {
			n++
			return dns.NewFile(filepath.Join(dir, "dns"+string(rune('a'+n))+".json"))
		},
	}
}

func records(t *testing.T, r dns.Registry) map[string]string {
	t.Helper()
	got, err := r.Records(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestRegistry(t *testing.T) {
	ctx := context.Background()
	for name, newRegistry := range registries(t) {
		t.Run(name, func(t *testing.T) {
			r := newRegistry()
			if got := records(t, r); len(got) != 0 {
				t.Fatalf("new registry has records %v", got)
			}
			if err := r.Set(ctx, "a.example.com", "ns/a"); err != nil {
				t.Fatal(err)
			}
			// Idempotent.
			if err := r.Set(ctx, "a.example.com", "ns/a"); err != nil {
				t.Fatalf("repeated Set: %v", err)
			}
			// Another owner cannot take the domain.
			err := r.Set(ctx, "a.example.com", "ns/b")
			if !errs.IsAlreadyExists(err) {
				t.Fatalf("Set of a held domain: %v, want AlreadyExists", err)
			}
			if err := r.Set(ctx, "b.example.com", "ns/b"); err != nil {
				t.Fatal(err)
			}
			// Moving to another domain releases the old one, even when
			// the new one is taken.
			if err := r.Set(ctx, "c.example.com", "ns/a"); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"b.example.com": "ns/b", "c.example.com": "ns/a"}
			if got := records(t, r); !maps.Equal(got, want) {
				t.Fatalf("records %v, want %v", got, want)
			}
			if err := r.Set(ctx, "b.example.com", "ns/a"); !errs.IsAlreadyExists(err) {
				t.Fatalf("Set of a held domain: %v, want AlreadyExists", err)
			}
			want = map[string]string{"b.example.com": "ns/b"}
			if got := records(t, r); !maps.Equal(got, want) {
				t.Fatalf("records after a failed move %v, want %v", got, want)
			}
			// Remove is idempotent and removes only the owner's records.
			for range 2 {
				if err := r.Remove(ctx, "ns/a"); err != nil {
					t.Fatal(err)
				}
			}
			if got := records(t, r); !maps.Equal(got, want) {
				t.Fatalf("records %v, want %v", got, want)
			}
			if err := r.Remove(ctx, "ns/b"); err != nil {
				t.Fatal(err)
			}
			if got := records(t, r); len(got) != 0 {
				t.Fatalf("records after removing everything: %v", got)
			}
		})
	}
}

func TestRegistryConcurrentOwners(t *testing.T) {
	ctx := context.Background()
	for name, newRegistry := range registries(t) {
		t.Run(name, func(t *testing.T) {
			r := newRegistry()
			var wg sync.WaitGroup
			won := make(chan string, 8)
			for _, owner := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := r.Set(ctx, "x.example.com", owner); err == nil {
						won <- owner
					} else if !errs.IsAlreadyExists(err) {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			close(won)
			var winners []string
			for w := range won {
				winners = append(winners, w)
			}
			if len(winners) != 1 {
				t.Fatalf("winners %v, want exactly one", winners)
			}
			if got := records(t, r); got["x.example.com"] != winners[0] || len(got) != 1 {
				t.Fatalf("records %v, winner %s", got, winners[0])
			}
		})
	}
}

func TestFilePersists(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dns.json")
	if err := dns.NewFile(path).Set(ctx, "a.example.com", "ns/a"); err != nil {
		t.Fatal(err)
	}
	if got := records(t, dns.NewFile(path)); got["a.example.com"] != "ns/a" {
		t.Fatalf("a second registry on the file reads %v", got)
	}
	if err := os.WriteFile(path, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := dns.NewFile(path).Records(ctx); !errs.IsInternal(err) {
		t.Fatalf("corrupt file: %v, want Internal", err)
	}
	if err := dns.NewFile(path).Set(ctx, "b.example.com", "ns/b"); err == nil {
		t.Fatal("Set over a corrupt file succeeded")
	}
	if data, _ := os.ReadFile(path); string(data) != "{not json" {
		t.Fatalf("a failed Set rewrote the corrupt file: %q", data)
	}
}
