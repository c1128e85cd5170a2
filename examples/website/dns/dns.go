// Package dns is the website example's stand-in for an external system: a
// DNS registry that maps domains to the Website holding them. The Website
// controller registers a domain when a Website appears and removes it,
// from a finalizer, before the Website is allowed to disappear, which is
// the pattern for any resource outside the store (cloud load balancers,
// DNS zones, buckets) that an operator creates and must not leak.
//
// Memory keeps records in the process (tests); File keeps them in a JSON
// file so that they survive restarts and can be inspected with cat.
package dns

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"sync"

	"github.com/capstanhq/capstan/pkg/errs"
)

// Registry holds DNS records: a domain points at the owner that registered
// it. Implementations are safe for concurrent use, and every method is
// idempotent so that a reconcile may repeat it after a crash.
type Registry interface {
	// Set points domain at owner and removes every other record of owner,
	// so that an owner holds at most one domain. A domain held by another
	// owner is errs.AlreadyExists; owner's other records are removed all
	// the same (it no longer wants them).
	Set(ctx context.Context, domain, owner string) error
	// Remove deletes every record of owner; none is not an error.
	Remove(ctx context.Context, owner string) error
	// Records returns a copy of all records, domain → owner.
	Records(ctx context.Context) (map[string]string, error)
}

// Memory is a Registry in process memory. The zero value is ready to use.
type Memory struct {
	mu      sync.Mutex
	records map[string]string
}

var _ Registry = (*Memory)(nil)

// Set implements Registry.
func (m *Memory) Set(_ context.Context, domain, owner string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.records == nil {
		m.records = map[string]string{}
	}
	return set(m.records, domain, owner)
}

// Remove implements Registry.
func (m *Memory) Remove(_ context.Context, owner string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	remove(m.records, owner)
	return nil
}

// Records implements Registry.
func (m *Memory) Records(context.Context) (map[string]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := maps.Clone(m.records)
	if out == nil {
		out = map[string]string{}
	}
	return out, nil
}

// File is a Registry kept in a JSON file ({"domain": "owner", ...}),
// rewritten atomically on every change. One process should use a file at a
// time.
type File struct {
	path string
	mu   sync.Mutex
}

var _ Registry = (*File)(nil)

// NewFile returns a registry in the file at path, which need not exist yet
// (its directory must).
func NewFile(path string) *File { return &File{path: path} }

// Path returns the file's path.
func (f *File) Path() string { return f.path }

// Set implements Registry.
func (f *File) Set(_ context.Context, domain, owner string) error {
	return f.change(func(r map[string]string) error { return set(r, domain, owner) })
}

// Remove implements Registry.
func (f *File) Remove(_ context.Context, owner string) error {
	return f.change(func(r map[string]string) error { remove(r, owner); return nil })
}

// Records implements Registry.
func (f *File) Records(context.Context) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.load()
}

func (f *File) change(fn func(map[string]string) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.load()
	if err != nil {
		return err
	}
	before := maps.Clone(r)
	ferr := fn(r) // may have changed r even when it fails
	if maps.Equal(before, r) {
		return ferr
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return errs.Wrap(errs.Internal, err, "encode DNS records")
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.path), ".dns-*.json")
	if err != nil {
		return errs.Wrap(errs.Unavailable, err, "write DNS records")
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return errs.Wrap(errs.Unavailable, err, "write DNS records")
	}
	if err := tmp.Close(); err != nil {
		return errs.Wrap(errs.Unavailable, err, "write DNS records")
	}
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return errs.Wrap(errs.Unavailable, err, "write DNS records")
	}
	return ferr
}

func (f *File) load() (map[string]string, error) {
	r := map[string]string{}
	data, err := os.ReadFile(f.path)
	if os.IsNotExist(err) {
		return r, nil
	}
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "read DNS records")
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "DNS records in %s are corrupt", f.path)
	}
	return r, nil
}

func set(r map[string]string, domain, owner string) error {
	holder, taken := r[domain]
	taken = taken && holder != owner
	for d, o := range r {
		if o == owner && d != domain {
			delete(r, d)
		}
	}
	if taken {
		return errs.New(errs.AlreadyExists, "domain %s is held by %s", domain, holder)
	}
	r[domain] = owner
	return nil
}

func remove(r map[string]string, owner string) {
	for d, o := range r {
		if o == owner {
			delete(r, d)
		}
	}
}
