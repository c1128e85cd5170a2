package storetest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

func (s *suite) watchTests() []test {
	return []test{
		{"FromNow", s.testWatchFromNow},
		{"EventsInOrderPerObject", s.testWatchEventsInOrderPerObject},
		{"NamespaceFilter", s.testWatchNamespaceFilter},
		{"KindsAreSeparate", s.testWatchKindsAreSeparate},
		{"ResumeFromEventRevision", s.testWatchResumeFromEventRevision},
		{"FromListRevisionSeesLaterChanges", s.testWatchFromListRevision},
		{"Bookmarks", s.testWatchBookmarks},
		{"ExpiredRevision", s.testWatchExpiredRevision},
		{"MalformedRevision", s.testWatchMalformedRevision},
		{"UnknownKind", s.testWatchUnknownKind},
		{"CancelClosesChannel", s.testWatchCancelClosesChannel},
		{"ReceiverOwnsObject", s.testWatchReceiverOwnsObject},
		{"UnstructuredAndClusterScoped", s.testWatchUnstructuredAndClusterScoped},
		{"ManyWatchersSeeTheSameChanges", s.testWatchManyWatchers},
	}
}

// watchFromList starts a watch of kind at the revision of a List.
func (s *suite) watchFromList(t *testing.T, st store.Store, kind string, opts store.WatchOptions) *watcher {
	t.Helper()
	opts.Revision = list(t, st, kind, store.ListOptions{}).Revision
	return s.watch(t, st, kind, opts)
}

// summary is what the suite compares between two deliveries of one change.
type summary struct {
	Type store.EventType
	Key  meta.Key
	RV   string // empty for Deleted, whose object may carry only the key
}

func summarize(evs []store.Event) []summary {
	out := make([]summary, len(evs))
	for i, ev := range evs {
		out[i] = summary{Type: ev.Type, Key: meta.KeyOf(ev.Object)}
		if ev.Type != store.Deleted {
			out[i].RV = ev.Object.GetObjectMeta().ResourceVersion
		}
	}
	return out
}

func (s *suite) testWatchFromNow(t *testing.T) {
	st := s.newStore(t)
	mustCreate(t, st, widget("ns1", "before"))
	w := s.watch(t, st, WidgetKind, store.WatchOptions{})
	obj := widget("ns1", "after")
	mustCreate(t, st, obj)
	ev := w.expect(store.Added, meta.Key{Namespace: "ns1", Name: "after"})
	got, ok := ev.Object.(*Widget)
	if !ok {
		t.Fatalf("event object is %T, want *Widget", ev.Object)
	}
	if !sameWidget(got, obj) {
		t.Errorf("Added event object %+v, want what Create returned %+v", got, obj)
	}
}

func (s *suite) testWatchEventsInOrderPerObject(t *testing.T) {
	st := s.newStore(t)
	w := s.watchFromList(t, st, WidgetKind, store.WatchOptions{})
	a, b := widget("ns1", "a"), widget("ns1", "b")
	written := map[meta.Key][]summary{}
	// resourceVersion is per object, so sizes are keyed by object and
	// version.
	type version struct {
		key meta.Key
		rv  string
	}
	sizes := map[version]int{} // spec size written at each version
	note := func(typ store.EventType, obj *Widget) {
		sm := summary{Type: typ, Key: meta.KeyOf(obj)}
		if typ != store.Deleted {
			sm.RV = obj.ResourceVersion
			sizes[version{sm.Key, obj.ResourceVersion}] = obj.Spec.Size
		}
		written[sm.Key] = append(written[sm.Key], sm)
	}
	mustCreate(t, st, a)
	note(store.Added, a)
	mustCreate(t, st, b)
	note(store.Added, b)
	for i := range 3 {
		a.Spec.Size = 10 + i
		mustUpdate(t, st, a)
		note(store.Modified, a)
		b.Status.Phase = fmt.Sprint("p", i)
		if err := st.UpdateStatus(ctx(t), b); err != nil {
			t.Fatal(err)
		}
		note(store.Modified, b)
	}
	if err := st.Delete(ctx(t), meta.DeepCopy(b)); err != nil {
		t.Fatal(err)
	}
	note(store.Deleted, b)
	if err := st.Delete(ctx(t), meta.DeepCopy(a)); err != nil {
		t.Fatal(err)
	}
	note(store.Deleted, a)

	got := map[meta.Key][]summary{}
	for range 10 {
		ev := w.next()
		sm := summarize([]store.Event{ev})[0]
		got[sm.Key] = append(got[sm.Key], sm)
		if ev.Type != store.Deleted {
			if size, ok := sizes[version{sm.Key, sm.RV}]; !ok || ev.Object.(*Widget).Spec.Size != size {
				t.Errorf("%s event of %s at rv %s has size %d, want %d", ev.Type, sm.Key, sm.RV, ev.Object.(*Widget).Spec.Size, size)
			}
		}
	}
	for key, want := range written {
		if !slices.Equal(got[key], want) {
			t.Errorf("events of %s:\n got %v\nwant %v", key, got[key], want)
		}
	}
}

func (s *suite) testWatchNamespaceFilter(t *testing.T) {
	st := s.newStore(t)
	w := s.watchFromList(t, st, WidgetKind, store.WatchOptions{Namespace: "a"})
	for i := range 3 {
		mustCreate(t, st, widget("b", fmt.Sprint("w", i)))
		mustCreate(t, st, widget("ab", fmt.Sprint("w", i)))
		mustCreate(t, st, widget("a", fmt.Sprint("w", i)))
	}
	evs := w.until(store.Added, meta.Key{Namespace: "a", Name: "w2"})
	want := []summary{
		{store.Added, meta.Key{Namespace: "a", Name: "w0"}, ""},
		{store.Added, meta.Key{Namespace: "a", Name: "w1"}, ""},
		{store.Added, meta.Key{Namespace: "a", Name: "w2"}, ""},
	}
	got := summarize(evs)
	for i := range got {
		got[i].RV = ""
	}
	if !slices.Equal(got, want) {
		t.Errorf("watch of namespace a got %v, want %v", got, want)
	}
}

func (s *suite) testWatchKindsAreSeparate(t *testing.T) {
	st := s.newStore(t)
	w := s.watchFromList(t, st, WidgetKind, store.WatchOptions{})
	mustCreate(t, st, doodad("ns1", "same"))
	mustCreate(t, st, &Gizmo{ObjectMeta: meta.ObjectMeta{Name: "same"}})
	mustCreate(t, st, widget("ns1", "same"))
	ev := w.expect(store.Added, meta.Key{Namespace: "ns1", Name: "same"})
	if _, ok := ev.Object.(*Widget); !ok {
		t.Errorf("Widget watch delivered a %T", ev.Object)
	}
}

// writeSequence makes n changes of several kinds to a few widgets and
// returns nothing; the caller watches them.
func writeSequence(t *testing.T, st store.Store, n int) {
	t.Helper()
	live := map[string]*Widget{}
	for i := range n {
		name := fmt.Sprint("w", i%3)
		w, ok := live[name]
		switch {
		case !ok:
			w = widget("ns1", name)
			mustCreate(t, st, w)
			live[name] = w
		case i%4 == 3:
			if err := st.Delete(ctx(t), meta.DeepCopy(w)); err != nil {
				t.Fatal(err)
			}
			delete(live, name)
		case i%2 == 0:
			w.Status.Phase = fmt.Sprint("p", i)
			if err := st.UpdateStatus(ctx(t), w); err != nil {
				t.Fatal(err)
			}
		default:
			w.Spec.Size = i
			mustUpdate(t, st, w)
		}
	}
}

func (s *suite) testWatchResumeFromEventRevision(t *testing.T) {
	st := s.newStore(t)
	const n = 12
	w := s.watchFromList(t, st, WidgetKind, store.WatchOptions{})
	writeSequence(t, st, n)
	var all []store.Event
	for range n {
		all = append(all, w.next())
	}
	marker := widget("ns1", "marker")
	mustCreate(t, st, marker)
	w.expect(store.Added, meta.KeyOf(marker))
	for _, i := range []int{0, n / 2, n - 2, n - 1} {
		t.Run(fmt.Sprint("after", i), func(t *testing.T) {
			r := s.watch(t, st, WidgetKind, store.WatchOptions{Revision: all[i].Revision})
			var got []store.Event
			for range n - 1 - i {
				got = append(got, r.next())
			}
			if g, want := summarize(got), summarize(all[i+1:]); !slices.Equal(g, want) {
				t.Errorf("resumed after event %d:\n got %v\nwant %v", i, g, want)
			}
			// Exactly the next change after the sequence: no duplicate.
			r.expect(store.Added, meta.KeyOf(marker))
		})
	}
}

func (s *suite) testWatchFromListRevision(t *testing.T) {
	st := s.newStore(t)
	for _, n := range []string{"keep", "change", "gone"} {
		mustCreate(t, st, widget("ns1", n))
	}
	res := list(t, st, WidgetKind, store.ListOptions{})
	listed := map[string]uint64{} // uid → resourceVersion the list showed
	for _, it := range res.Items {
		listed[it.GetObjectMeta().UID] = rvOf(t, it)
	}
	change := mustGetWidget(t, st, "ns1", "change")
	change.Spec.Size = 50
	mustUpdate(t, st, change)
	if err := st.Delete(ctx(t), widget("ns1", "gone")); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, st, widget("ns1", "new"))
	marker := widget("ns1", "marker")

	// The changes happened before the watch starts: it replays them.
	w := s.watch(t, st, WidgetKind, store.WatchOptions{Revision: res.Revision})
	mustCreate(t, st, marker)
	var got []summary
	for _, ev := range w.until(store.Added, meta.KeyOf(marker)) {
		m := ev.Object.GetObjectMeta()
		if rv, ok := listed[m.UID]; ok && ev.Type != store.Deleted && m.ResourceVersion != "" && rvOf(t, ev.Object) <= rv {
			continue // a change the list already showed
		}
		sm := summarize([]store.Event{ev})[0]
		sm.RV = ""
		got = append(got, sm)
	}
	want := []summary{
		{store.Modified, meta.Key{Namespace: "ns1", Name: "change"}, ""},
		{store.Deleted, meta.Key{Namespace: "ns1", Name: "gone"}, ""},
		{store.Added, meta.Key{Namespace: "ns1", Name: "new"}, ""},
		{store.Added, meta.Key{Namespace: "ns1", Name: "marker"}, ""},
	}
	if !slices.Equal(got, want) {
		t.Errorf("watch from the list's revision:\n got %v\nwant %v", got, want)
	}
}

func (s *suite) testWatchBookmarks(t *testing.T) {
	st := s.newStore(t)
	mustCreate(t, st, widget("ns1", "w0"))
	w := s.watchFromList(t, st, WidgetKind, store.WatchOptions{Bookmarks: true})
	var bm store.Event
	for {
		ev := w.raw()
		if ev.Type == store.Bookmark {
			bm = ev
			break
		}
		if ev.Object != nil && meta.KeyOf(ev.Object).Name == "w0" && ev.Type == store.Added {
			continue // a change the list showed, which a watch may repeat
		}
		t.Fatalf("got %s event, want a Bookmark (nothing was written)", ev.Type)
	}
	if bm.Revision == "" || bm.Object != nil {
		t.Fatalf("Bookmark has revision %q object %v; want a revision and no object", bm.Revision, bm.Object)
	}
	after := widget("ns1", "after")
	mustCreate(t, st, after)
	w.expect(store.Added, meta.KeyOf(after))
	r := s.watch(t, st, WidgetKind, store.WatchOptions{Revision: bm.Revision})
	r.expect(store.Added, meta.KeyOf(after))
}

func (s *suite) testWatchExpiredRevision(t *testing.T) {
	if s.h.NewSmallHistory == nil {
		t.Skip("Harness.NewSmallHistory is nil")
	}
	st := s.make(t, s.h.NewSmallHistory)
	mustCreate(t, st, widget("ns1", "first"))
	old := list(t, st, WidgetKind, store.ListOptions{}).Revision
	blob := strings.Repeat("x", 4096)
	for i := range 500 {
		w := widget("ns1", fmt.Sprintf("w%03d", i))
		w.Spec.Blob = blob
		mustCreate(t, st, w)
	}
	w := s.watch(t, st, WidgetKind, store.WatchOptions{Revision: old})
	ev := w.raw()
	if ev.Type != store.Expired {
		t.Fatalf("watch from a revision before 500 writes of 4 KiB got %s, want Expired", ev.Type)
	}
	w.closed()

	// A recent revision still works.
	recent := list(t, st, WidgetKind, store.ListOptions{}).Revision
	r := s.watch(t, st, WidgetKind, store.WatchOptions{Revision: recent})
	mustCreate(t, st, widget("ns1", "last"))
	r.until(store.Added, meta.Key{Namespace: "ns1", Name: "last"}) // may repeat what the list showed
}

func (s *suite) testWatchMalformedRevision(t *testing.T) {
	st := s.newStore(t)
	for _, rev := range []string{"not-a-revision", "%%%", "-1", "\x00"} {
		c, cancel := context.WithCancel(ctx(t))
		ch, err := st.Watch(c, WidgetKind, store.WatchOptions{Revision: rev})
		cancel()
		if ch != nil {
			for range ch {
			}
		}
		wantCode(t, fmt.Sprintf("Watch from revision %q", rev), err, errs.InvalidArgument, "revision")
	}
}

func (s *suite) testWatchUnknownKind(t *testing.T) {
	st := s.newStore(t)
	_, err := st.Watch(ctx(t), "Nope", store.WatchOptions{})
	wantCode(t, "Watch of an unknown kind", err, errs.InvalidArgument, "kind")
}

func (s *suite) testWatchCancelClosesChannel(t *testing.T) {
	st := s.newStore(t)
	w := s.watchFromList(t, st, WidgetKind, store.WatchOptions{Bookmarks: true})
	mustCreate(t, st, widget("ns1", "w1"))
	w.expect(store.Added, meta.Key{Namespace: "ns1", Name: "w1"})
	w.cancel()
	w.closed()
	// The store still works.
	mustCreate(t, st, widget("ns1", "w2"))
}

func (s *suite) testWatchReceiverOwnsObject(t *testing.T) {
	st := s.newStore(t)
	w1 := s.watchFromList(t, st, WidgetKind, store.WatchOptions{})
	w2 := s.watchFromList(t, st, WidgetKind, store.WatchOptions{})
	mustCreate(t, st, widget("ns1", "w1"))
	want := frozenWidget(t, st, "ns1", "w1")
	key := meta.Key{Namespace: "ns1", Name: "w1"}
	o1 := w1.expect(store.Added, key).Object.(*Widget)
	o1.Spec.Tags[0] = "changed"
	o1.Spec.Nested["k"] = "changed"
	o1.Labels["app"] = "changed"
	if o2 := w2.expect(store.Added, key).Object.(*Widget); !sameWidget(o2, want) {
		t.Errorf("another watcher's event object changed: %+v, want %+v", o2, want)
	}
	if got := mustGetWidget(t, st, "ns1", "w1"); !sameWidget(got, want) {
		t.Errorf("mutating an event object changed the store: %+v, want %+v", got, want)
	}
}

func (s *suite) testWatchUnstructuredAndClusterScoped(t *testing.T) {
	st := s.newStore(t)
	wd := s.watchFromList(t, st, DoodadKind, store.WatchOptions{})
	wg := s.watchFromList(t, st, GizmoKind, store.WatchOptions{})
	d := doodad("ns1", "d1")
	mustCreate(t, st, d)
	mustCreate(t, st, &Gizmo{ObjectMeta: meta.ObjectMeta{Name: "g1"}, Spec: GizmoSpec{Size: 4}})
	ev := wd.expect(store.Added, meta.Key{Namespace: "ns1", Name: "d1"})
	u, ok := ev.Object.(*meta.Unstructured)
	if !ok || u.Kind != DoodadKind || !sameJSON(u.Fields, d.Fields) {
		t.Errorf("Doodad event object %T %+v, want an Unstructured with fields %v", ev.Object, ev.Object, d.Fields)
	}
	ev = wg.expect(store.Added, meta.Key{Name: "g1"})
	if g, ok := ev.Object.(*Gizmo); !ok || g.Spec.Size != 4 {
		t.Errorf("Gizmo event object %T %+v", ev.Object, ev.Object)
	}
	if err := st.Delete(ctx(t), d); err != nil {
		t.Fatal(err)
	}
	ev = wd.expect(store.Deleted, meta.Key{Namespace: "ns1", Name: "d1"})
	if u, ok := ev.Object.(*meta.Unstructured); !ok || u.Kind != DoodadKind {
		t.Errorf("Deleted event object %T %+v, want an Unstructured of kind %s", ev.Object, ev.Object, DoodadKind)
	}
}

func (s *suite) testWatchManyWatchers(t *testing.T) {
	st := s.newStore(t)
	rev := list(t, st, WidgetKind, store.ListOptions{}).Revision
	const watchers, n = 4, 12
	ws := make([]*watcher, watchers)
	for i := range ws {
		ws[i] = s.watch(t, st, WidgetKind, store.WatchOptions{Revision: rev})
	}
	writeSequence(t, st, n)
	var first []summary
	for i, w := range ws {
		var evs []store.Event
		for range n {
			evs = append(evs, w.next())
		}
		if i == 0 {
			first = summarize(evs)
		} else if got := summarize(evs); !slices.Equal(got, first) {
			t.Errorf("watcher %d saw %v, watcher 0 saw %v", i, got, first)
		}
	}
}
