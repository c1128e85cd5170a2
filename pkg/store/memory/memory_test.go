package memory_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/memory"
	"github.com/capstanhq/capstan/pkg/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const timeout = 10 * time.Second

func newStore(t *testing.T, opts ...memory.Option) *memory.Store {
	t.Helper()
	scheme := store.NewScheme()
	if err := storetest.RegisterKinds(scheme); err != nil {
		t.Fatal(err)
	}
	s := memory.New(scheme, opts...)
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func widget(ns, name string) *storetest.Widget {
	return &storetest.Widget{ObjectMeta: meta.ObjectMeta{Namespace: ns, Name: name}, Spec: storetest.WidgetSpec{Size: 1}}
}

func recv(t *testing.T, ch <-chan store.Event) (store.Event, bool) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		return ev, ok
	case <-time.After(timeout):
		t.Fatalf("no event within %v", timeout)
	}
	return store.Event{}, false
}

// TestSlowWatcherExpires: a watcher that does not read while the ring
// wraps gets, in order and without gaps, what it could still be given,
// then Expired and a closed channel; the writes never wait for it.
func TestSlowWatcherExpires(t *testing.T) {
	const history, writes = 10, 500
	s := newStore(t, memory.WithHistory(history))
	ctx := t.Context()
	start := s.Revision()
	ch, err := s.Watch(ctx, storetest.WidgetKind, store.WatchOptions{Revision: start})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for i := range writes {
			if err := s.Create(ctx, widget("ns", fmt.Sprint("w", i))); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(timeout):
		t.Fatal("writes blocked behind a watcher that does not read")
	}

	want, _ := meta.ParseResourceVersion(start)
	delivered := 0
	for {
		ev, ok := recv(t, ch)
		if !ok {
			t.Fatal("channel closed without an Expired event")
		}
		if ev.Type == store.Expired {
			break
		}
		want++
		if ev.Type != store.Added || ev.Revision != meta.FormatResourceVersion(want) {
			t.Fatalf("event %d: %s at %s, want Added at %d (no gaps)", delivered, ev.Type, ev.Revision, want)
		}
		delivered++
	}
	if delivered >= writes {
		t.Fatalf("delivered all %d events and still expired", delivered)
	}
	if _, ok := recv(t, ch); ok {
		t.Error("channel open after Expired")
	}
}

// TestQuietKindKeepsHistory: each kind has its own ring, so writes of one
// kind do not expire watches of another.
func TestQuietKindKeepsHistory(t *testing.T) {
	s := newStore(t, memory.WithHistory(5))
	ctx := t.Context()
	if err := s.Create(ctx, &storetest.Gizmo{ObjectMeta: meta.ObjectMeta{Name: "g"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := s.Create(ctx, widget("ns", fmt.Sprint("w", i))); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := s.Watch(ctx, storetest.GizmoKind, store.WatchOptions{Revision: "0"})
	if err != nil {
		t.Fatal(err)
	}
	if ev, _ := recv(t, ch); ev.Type != store.Added || meta.KeyOf(ev.Object).Name != "g" {
		t.Errorf("quiet kind from revision 0: %s, want the Gizmo's Added", ev.Type)
	}
	ch, err = s.Watch(ctx, storetest.WidgetKind, store.WatchOptions{Revision: "0"})
	if err != nil {
		t.Fatal(err)
	}
	if ev, _ := recv(t, ch); ev.Type != store.Expired {
		t.Errorf("busy kind from revision 0: %s, want Expired", ev.Type)
	}
}

func TestWatchFutureRevisionExpires(t *testing.T) {
	s := newStore(t)
	ch, err := s.Watch(t.Context(), storetest.WidgetKind, store.WatchOptions{Revision: "1000"})
	if err != nil {
		t.Fatal(err)
	}
	if ev, _ := recv(t, ch); ev.Type != store.Expired {
		t.Errorf("watch from a revision the store has not reached: %s, want Expired", ev.Type)
	}
}

func TestDeletedEventCarriesLastState(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	w := widget("ns", "w")
	w.Spec.Color = "green"
	if err := s.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	ch, err := s.Watch(ctx, storetest.WidgetKind, store.WatchOptions{Revision: w.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	del := widget("ns", "w")
	if err := s.Delete(ctx, del); err != nil {
		t.Fatal(err)
	}
	ev, _ := recv(t, ch)
	got, ok := ev.Object.(*storetest.Widget)
	if ev.Type != store.Deleted || !ok || got.Spec.Color != "green" || got.UID != w.UID {
		t.Fatalf("Deleted event %s %+v, want the last state", ev.Type, ev.Object)
	}
	if got.ResourceVersion != ev.Revision || got.ResourceVersion != del.ResourceVersion || got.ResourceVersion == w.ResourceVersion {
		t.Errorf("Deleted object has resourceVersion %s, event %s, Delete returned %s; want the delete's", got.ResourceVersion, ev.Revision, del.ResourceVersion)
	}
}

func TestBookmarksOfAQuietKindAdvance(t *testing.T) {
	s := newStore(t, memory.WithBookmarkInterval(20*time.Millisecond))
	ctx := t.Context()
	ch, err := s.Watch(ctx, storetest.GizmoKind, store.WatchOptions{Bookmarks: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := s.Create(ctx, widget("ns", fmt.Sprint("w", i))); err != nil {
			t.Fatal(err)
		}
	}
	want := s.Revision()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ev, ok := recv(t, ch)
		if !ok || ev.Type != store.Bookmark {
			t.Fatalf("got %s (open %v), want only bookmarks", ev.Type, ok)
		}
		if ev.Revision == want {
			return // the quiet kind's position moved past the other kind's writes
		}
	}
	t.Errorf("no bookmark at revision %s within %v", want, timeout)
}

func TestUnstructuredAccessToTypedKind(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	w := widget("ns", "w")
	w.Spec.Tags = []string{"a"}
	if err := s.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	u := &meta.Unstructured{Kind: storetest.WidgetKind}
	if err := s.Get(ctx, meta.KeyOf(w), u); err != nil {
		t.Fatal(err)
	}
	spec, _ := u.Field("spec")
	if u.UID != w.UID || u.Kind != storetest.WidgetKind || spec.(map[string]any)["tags"].([]any)[0] != "a" {
		t.Fatalf("typed object read as Unstructured: %+v", u)
	}

	u.SetField("spec", map[string]any{"size": 5, "color": "blue"})
	if err := s.Update(ctx, u); err != nil {
		t.Fatal(err)
	}
	if u.Generation != 2 {
		t.Errorf("generation after an unstructured spec change = %d", u.Generation)
	}
	got := &storetest.Widget{}
	if err := s.Get(ctx, meta.KeyOf(w), got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Size != 5 || got.Spec.Color != "blue" || got.ResourceVersion != u.ResourceVersion {
		t.Errorf("typed view after an unstructured Update: %+v", got)
	}

	bad := &meta.Unstructured{Kind: storetest.WidgetKind, ObjectMeta: meta.ObjectMeta{Namespace: "ns", Name: "bad"}}
	bad.SetField("spec", map[string]any{"size": "not a number"})
	err := s.Create(ctx, bad)
	if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != "spec.size" {
		t.Errorf("Create with a mistyped field: %v (field %q), want InvalidArgument on spec.size", err, errs.FieldOf(err))
	}
	bad.SetField("spec", map[string]any{"unknown": 1})
	err = s.Create(ctx, bad)
	if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != "spec.unknown" {
		t.Errorf("Create with an unknown field: %v (field %q), want InvalidArgument on spec.unknown", err, errs.FieldOf(err))
	}
	if err := s.Get(ctx, meta.KeyOf(bad), &storetest.Widget{}); !errs.IsNotFound(err) {
		t.Errorf("bad Create stored something: %v", err)
	}
}

func TestContinueTokens(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	for i := range 5 {
		if err := s.Create(ctx, widget("ns", fmt.Sprint("w", i))); err != nil {
			t.Fatal(err)
		}
	}
	res, err := s.List(ctx, storetest.WidgetKind, store.ListOptions{Limit: 2})
	if err != nil || res.Continue == "" {
		t.Fatalf("first page: %v %v", res, err)
	}
	// A token naming a revision the store never reached did not come
	// from it.
	forged := "eyJyZXYiOjEwMDAsImtleSI6eyJuYW1lc3BhY2UiOiJucyIsIm5hbWUiOiJ3MSJ9fQ" // {"rev":1000,"key":{"namespace":"ns","name":"w1"}}
	for _, tok := range []string{forged, res.Continue + "x", res.Continue[:len(res.Continue)-2]} {
		_, err := s.List(ctx, storetest.WidgetKind, store.ListOptions{Limit: 2, Continue: tok})
		if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != "continue" {
			t.Errorf("continue %q: %v, want InvalidArgument on continue", tok, err)
		}
	}
	_, err = s.List(ctx, storetest.WidgetKind, store.ListOptions{Limit: -1})
	if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != "limit" {
		t.Errorf("negative limit: %v", err)
	}
}

func TestClosedStore(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	ch, err := s.Watch(ctx, storetest.WidgetKind, store.WatchOptions{Bookmarks: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for {
		if _, ok := recv(t, ch); !ok {
			break
		}
	}
	key := meta.Key{Namespace: "ns", Name: "w"}
	checks := map[string]error{
		"Get":    s.Get(ctx, key, &storetest.Widget{}),
		"Create": s.Create(ctx, widget("ns", "w")),
		"Update": s.Update(ctx, widget("ns", "w")),
		"Delete": s.Delete(ctx, widget("ns", "w")),
	}
	_, checks["List"] = s.List(ctx, storetest.WidgetKind, store.ListOptions{})
	_, checks["Watch"] = s.Watch(ctx, storetest.WidgetKind, store.WatchOptions{})
	for op, err := range checks {
		if !errs.IsUnavailable(err) {
			t.Errorf("%s on a closed store: %v, want Unavailable", op, err)
		}
	}
}

func TestCanceledContext(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Create(ctx, widget("ns", "w")); !errs.IsCanceled(err) {
		t.Errorf("Create with a canceled context: %v", err)
	}
	if _, err := s.Watch(ctx, storetest.WidgetKind, store.WatchOptions{}); !errs.IsCanceled(err) {
		t.Errorf("Watch with a canceled context: %v", err)
	}
	if err := s.Get(t.Context(), meta.Key{Namespace: "ns", Name: "w"}, &storetest.Widget{}); !errs.IsNotFound(err) {
		t.Errorf("canceled Create stored the object: %v", err)
	}
}

// TestConcurrentWritersAndWatchers runs writers of several kinds against
// watchers that rebuild the store's content from events; every watcher
// must end with exactly what List says, with per-object versions only
// increasing.
func TestConcurrentWritersAndWatchers(t *testing.T) {
	s := newStore(t, memory.WithHistory(100000))
	ctx := t.Context()
	start, err := s.List(ctx, storetest.WidgetKind, store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const watchers, writers, ops = 3, 4, 300
	markerKey := meta.Key{Namespace: "zz", Name: "marker"}
	type state map[meta.Key]string // key → resourceVersion
	results := make(chan state, watchers)
	for range watchers {
		ch, err := s.Watch(ctx, storetest.WidgetKind, store.WatchOptions{Revision: start.Revision})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			seen := state{}
			last := map[meta.Key]uint64{}
			for ev := range ch {
				if ev.Type != store.Added && ev.Type != store.Modified && ev.Type != store.Deleted {
					t.Errorf("unexpected %s event", ev.Type)
					break
				}
				key := meta.KeyOf(ev.Object)
				rv, _ := meta.ParseResourceVersion(ev.Object.GetObjectMeta().ResourceVersion)
				if rv <= last[key] {
					t.Errorf("%s: resourceVersion %d after %d", key, rv, last[key])
				}
				last[key] = rv
				if ev.Type == store.Deleted {
					delete(seen, key)
				} else {
					seen[key] = ev.Object.GetObjectMeta().ResourceVersion
				}
				if key == markerKey {
					results <- seen
					return
				}
			}
			results <- nil
		}()
	}

	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range ops {
				name := fmt.Sprint("w", r.IntN(10))
				w := &storetest.Widget{}
				err := s.Get(ctx, meta.Key{Namespace: "ns", Name: name}, w)
				switch {
				case errs.IsNotFound(err):
					err = s.Create(ctx, widget("ns", name))
				case err != nil:
				case r.IntN(5) == 0:
					err = s.Delete(ctx, w, store.WithPreconditions(store.Preconditions{ResourceVersion: w.ResourceVersion}))
				case r.IntN(2) == 0:
					w.Status.Phase = fmt.Sprint(r.Int())
					err = s.UpdateStatus(ctx, w)
				default:
					w.Spec.Size++
					err = s.Update(ctx, w)
				}
				if err != nil && !errs.IsConflict(err) && !errs.IsNotFound(err) && !errs.IsAlreadyExists(err) {
					t.Errorf("writer: %v", err)
					return
				}
				// Another kind, to interleave revisions.
				err = s.Create(ctx, &storetest.Gizmo{ObjectMeta: meta.ObjectMeta{Name: fmt.Sprint("g", r.IntN(1000))}})
				if err != nil && !errs.IsAlreadyExists(err) {
					t.Errorf("writer: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	marker := widget(markerKey.Namespace, markerKey.Name)
	if err := s.Create(ctx, marker); err != nil {
		t.Fatal(err)
	}
	final, err := s.List(ctx, storetest.WidgetKind, store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := state{}
	for _, it := range final.Items {
		want[meta.KeyOf(it)] = it.GetObjectMeta().ResourceVersion
	}
	for i := range watchers {
		select {
		case got := <-results:
			if len(got) != len(want) {
				t.Errorf("watcher %d rebuilt %d objects, List has %d", i, len(got), len(want))
			}
			for k, rv := range want {
				if got[k] != rv {
					t.Errorf("watcher %d: %s at %q, List says %q", i, k, got[k], rv)
				}
			}
		case <-time.After(timeout):
			t.Fatal("watchers did not catch up")
		}
	}
}

// TestCloseEndsWatchGoroutines: after Close, no goroutine of the store is
// left, whether its watchers were reading, idle or blocked on a full
// channel.
func TestCloseEndsWatchGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	scheme := store.NewScheme()
	if err := storetest.RegisterKinds(scheme); err != nil {
		t.Fatal(err)
	}
	s := memory.New(scheme, memory.WithBookmarkInterval(time.Millisecond))
	ctx := context.Background()
	for range 3 {
		if _, err := s.Watch(ctx, storetest.WidgetKind, store.WatchOptions{Bookmarks: true}); err != nil {
			t.Fatal(err)
		}
	}
	// One watcher never reads while far more events than its channel
	// holds are written.
	if _, err := s.Watch(ctx, storetest.WidgetKind, store.WatchOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		if err := s.Create(ctx, widget("ns", fmt.Sprint("w", i))); err != nil {
			t.Fatal(err)
		}
	}
	c, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := s.Close(c); err != nil {
		t.Fatal(err)
	}
}

func TestWatchEndsWithItsContext(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	s := newStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	ch, err := s.Watch(ctx, storetest.WidgetKind, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := s.Create(t.Context(), widget("ns", fmt.Sprint("w", i))); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	for {
		if _, ok := recv(t, ch); !ok {
			break
		}
	}
}
