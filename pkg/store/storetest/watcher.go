package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// watcher reads one watch with the harness's event timeout.
type watcher struct {
	t       *testing.T
	ch      <-chan store.Event
	cancel  context.CancelFunc
	timeout time.Duration
}

// watch starts a watch that ends with the test (or w.cancel).
func (s *suite) watch(t *testing.T, st store.Store, kind string, opts store.WatchOptions) *watcher {
	t.Helper()
	c, cancel := context.WithCancel(ctx(t))
	ch, err := st.Watch(c, kind, opts)
	if err != nil {
		cancel()
		t.Fatalf("Watch %s %+v: %v", kind, opts, err)
	}
	w := &watcher{t: t, ch: ch, cancel: cancel, timeout: s.h.EventTimeout}
	t.Cleanup(w.stop)
	return w
}

// stop cancels the watch and drains its channel until it closes.
func (w *watcher) stop() {
	w.cancel()
	deadline := time.NewTimer(w.timeout)
	defer deadline.Stop()
	for {
		select {
		case _, ok := <-w.ch:
			if !ok {
				return
			}
		case <-deadline.C:
			w.t.Errorf("watch channel not closed %v after its context was canceled", w.timeout)
			return
		}
	}
}

// raw returns the next event of any type.
func (w *watcher) raw() store.Event {
	w.t.Helper()
	timer := time.NewTimer(w.timeout)
	defer timer.Stop()
	select {
	case ev, ok := <-w.ch:
		if !ok {
			w.t.Fatalf("watch channel closed while an event was expected")
		}
		return ev
	case <-timer.C:
		w.t.Fatalf("no watch event within %v", w.timeout)
	}
	return store.Event{}
}

// next returns the next change event, skipping bookmarks, and fails on
// Expired and Error events.
func (w *watcher) next() store.Event {
	w.t.Helper()
	for {
		ev := w.raw()
		switch ev.Type {
		case store.Bookmark:
			continue
		case store.Added, store.Modified, store.Deleted:
			if ev.Object == nil {
				w.t.Fatalf("%s event without an object", ev.Type)
			}
			if ev.Revision == "" {
				w.t.Fatalf("%s event of %s without a revision", ev.Type, meta.KeyOf(ev.Object))
			}
			return ev
		default:
			w.t.Fatalf("unexpected %s event (err %v)", ev.Type, ev.Err)
		}
	}
}

// expect reads the next change and checks its type and key.
func (w *watcher) expect(typ store.EventType, key meta.Key) store.Event {
	w.t.Helper()
	ev := w.next()
	if ev.Type != typ || meta.KeyOf(ev.Object) != key {
		w.t.Fatalf("got %s %s, want %s %s", ev.Type, meta.KeyOf(ev.Object), typ, key)
	}
	return ev
}

// until reads changes until one of key has type typ, returning all read
// (including that one).
func (w *watcher) until(typ store.EventType, key meta.Key) []store.Event {
	w.t.Helper()
	var out []store.Event
	for {
		ev := w.next()
		out = append(out, ev)
		if ev.Type == typ && meta.KeyOf(ev.Object) == key {
			return out
		}
	}
}

// closed waits for the channel to close, failing on any change event.
func (w *watcher) closed() {
	w.t.Helper()
	timer := time.NewTimer(w.timeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-w.ch:
			if !ok {
				return
			}
			if ev.Type != store.Bookmark {
				w.t.Fatalf("got %s event, want the channel closed", ev.Type)
			}
		case <-timer.C:
			w.t.Fatalf("watch channel not closed within %v", w.timeout)
		}
	}
}
