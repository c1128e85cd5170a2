package runtimetest

import (
	"context"
	"sync"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// Flaky wraps a store with a connection that tests can cut: while it is
// down every call fails with errs.Unavailable and the watches that were
// open end (with an Error event, or with Expired as when the position was
// lost). Writes made to the wrapped store directly meanwhile are what the
// runtime must catch up with once Restore brings the connection back.
type Flaky struct {
	store.Store

	mu      sync.Mutex
	down    bool
	watches map[*flakyWatch]struct{}
}

type flakyWatch struct {
	cut chan store.Event // receives the event that ends the watch
}

// NewFlaky wraps st.
func NewFlaky(st store.Store) *Flaky {
	return &Flaky{Store: st, watches: map[*flakyWatch]struct{}{}}
}

// Cut takes the connection down. Open watches end with an Expired event
// when expired is set, else with an Error event.
func (f *Flaky) Cut(expired bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = true
	ev := store.Event{Type: store.Error, Err: errs.New(errs.Unavailable, "connection cut by the test")}
	if expired {
		ev = store.Event{Type: store.Expired, Err: errs.New(errs.OutOfRange, "position lost while the connection was cut")}
	}
	for w := range f.watches {
		w.cut <- ev // buffered: never blocks
		delete(f.watches, w)
	}
}

// Restore brings the connection back.
func (f *Flaky) Restore() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = false
}

func (f *Flaky) check() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errs.New(errs.Unavailable, "connection is down")
	}
	return nil
}

// Get implements store.Reader.
func (f *Flaky) Get(ctx context.Context, key meta.Key, obj meta.Object) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Store.Get(ctx, key, obj)
}

// List implements store.Reader.
func (f *Flaky) List(ctx context.Context, kind string, opts store.ListOptions) (*store.ListResult, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	return f.Store.List(ctx, kind, opts)
}

// Create implements store.Writer.
func (f *Flaky) Create(ctx context.Context, obj meta.Object, opts ...store.WriteOption) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Store.Create(ctx, obj, opts...)
}

// Update implements store.Writer.
func (f *Flaky) Update(ctx context.Context, obj meta.Object, opts ...store.WriteOption) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Store.Update(ctx, obj, opts...)
}

// UpdateStatus implements store.Writer.
func (f *Flaky) UpdateStatus(ctx context.Context, obj meta.Object, opts ...store.WriteOption) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Store.UpdateStatus(ctx, obj, opts...)
}

// Delete implements store.Writer.
func (f *Flaky) Delete(ctx context.Context, obj meta.Object, opts ...store.DeleteOption) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.Store.Delete(ctx, obj, opts...)
}

// Watch implements store.Watcher; the watch ends when the connection is
// cut.
func (f *Flaky) Watch(ctx context.Context, kind string, opts store.WatchOptions) (<-chan store.Event, error) {
	f.mu.Lock()
	if f.down {
		f.mu.Unlock()
		return nil, errs.New(errs.Unavailable, "connection is down")
	}
	w := &flakyWatch{cut: make(chan store.Event, 1)}
	f.watches[w] = struct{}{}
	f.mu.Unlock()

	ictx, cancel := context.WithCancel(ctx)
	in, err := f.Store.Watch(ictx, kind, opts)
	if err != nil {
		cancel()
		f.forget(w)
		return nil, err
	}
	out := make(chan store.Event)
	go func() {
		defer close(out)
		defer func() {
			cancel()
			for range in { // the inner watch closes once ictx ends
			}
		}()
		defer f.forget(w)
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-w.cut:
				select {
				case out <- ev:
				case <-ctx.Done():
				}
				return
			case ev, ok := <-in:
				if !ok {
					return
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				case cut := <-w.cut:
					// Cut while delivering: the event is lost with the
					// connection.
					select {
					case out <- cut:
					case <-ctx.Done():
					}
					return
				}
			}
		}
	}()
	return out, nil
}

func (f *Flaky) forget(w *flakyWatch) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.watches, w)
}
