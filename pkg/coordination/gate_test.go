package coordination

import (
	"context"
	"sync"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// gateStore is one process's view of a shared store. Pause simulates a
// process that stops (a GC pause, SIGSTOP, a partition): its calls block
// until Resume, or fail when their context ends. It records every write
// with the time the call started, for assertions on observed time.
type gateStore struct {
	store.Store
	name string

	mu     sync.Mutex
	paused chan struct{} // non-nil while paused; closed by Resume
	writes []writeRecord
}

// writeRecord is one write call.
type writeRecord struct {
	op    string // create, update, delete
	kind  string
	key   meta.Key
	obj   meta.Object // what was written (a copy), nil for deletes
	start time.Time
	err   error
}

func newGate(st store.Store, name string) *gateStore { return &gateStore{Store: st, name: name} }

// Pause makes calls block.
func (g *gateStore) Pause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.paused == nil {
		g.paused = make(chan struct{})
	}
}

// Resume lets blocked and later calls through.
func (g *gateStore) Resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.paused != nil {
		close(g.paused)
		g.paused = nil
	}
}

func (g *gateStore) gate(ctx context.Context) error {
	g.mu.Lock()
	p := g.paused
	g.mu.Unlock()
	if p == nil {
		return nil
	}
	select {
	case <-p:
		return nil
	case <-ctx.Done():
		return errs.Wrap(errs.CodeOf(ctx.Err()), ctx.Err(), "process %s is paused", g.name)
	}
}

func (g *gateStore) record(op string, obj meta.Object, start time.Time, err error) {
	r := writeRecord{op: op, key: meta.KeyOf(obj), start: start, err: err}
	if k, kerr := g.Scheme().KindOf(obj); kerr == nil {
		r.kind = k.Name
	}
	if op != "delete" {
		r.obj = meta.DeepCopy(obj)
	}
	g.mu.Lock()
	g.writes = append(g.writes, r)
	g.mu.Unlock()
}

// Writes returns the successful writes of kind recorded so far.
func (g *gateStore) Writes(op, kind string) []writeRecord {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []writeRecord
	for _, w := range g.writes {
		if w.err == nil && (op == "" || w.op == op) && w.kind == kind {
			out = append(out, w)
		}
	}
	return out
}

// Get implements store.Reader.
func (g *gateStore) Get(ctx context.Context, key meta.Key, obj meta.Object) error {
	if err := g.gate(ctx); err != nil {
		return err
	}
	return g.Store.Get(ctx, key, obj)
}

// List implements store.Reader.
func (g *gateStore) List(ctx context.Context, kind string, opts store.ListOptions) (*store.ListResult, error) {
	if err := g.gate(ctx); err != nil {
		return nil, err
	}
	return g.Store.List(ctx, kind, opts)
}

// Watch implements store.Watcher; a paused process opens no new watch
// (a watch already open keeps delivering, as a socket's buffer would).
func (g *gateStore) Watch(ctx context.Context, kind string, opts store.WatchOptions) (<-chan store.Event, error) {
	if err := g.gate(ctx); err != nil {
		return nil, err
	}
	return g.Store.Watch(ctx, kind, opts)
}

// Delete implements store.Writer.
func (g *gateStore) Delete(ctx context.Context, obj meta.Object, opts ...store.DeleteOption) error {
	if err := g.gate(ctx); err != nil {
		return err
	}
	start := time.Now()
	err := g.Store.Delete(ctx, obj, opts...)
	g.record("delete", obj, start, err)
	return err
}

// Create implements store.Writer.
func (g *gateStore) Create(ctx context.Context, obj meta.Object, opts ...store.WriteOption) error {
	if err := g.gate(ctx); err != nil {
		return err
	}
	start := time.Now()
	err := g.Store.Create(ctx, obj, opts...)
	g.record("create", obj, start, err)
	return err
}

// Update implements store.Writer.
func (g *gateStore) Update(ctx context.Context, obj meta.Object, opts ...store.WriteOption) error {
	if err := g.gate(ctx); err != nil {
		return err
	}
	start := time.Now()
	err := g.Store.Update(ctx, obj, opts...)
	g.record("update", obj, start, err)
	return err
}

// UpdateStatus implements store.Writer.
func (g *gateStore) UpdateStatus(ctx context.Context, obj meta.Object, opts ...store.WriteOption) error {
	if err := g.gate(ctx); err != nil {
		return err
	}
	start := time.Now()
	err := g.Store.UpdateStatus(ctx, obj, opts...)
	g.record("updateStatus", obj, start, err)
	return err
}
