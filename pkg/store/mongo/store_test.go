package mongo

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/mongo/changes"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongotest"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongox"
	"github.com/capstanhq/capstan/pkg/store/storetest"
)

const eventTimeout = 30 * time.Second

func newScheme(t *testing.T) *store.Scheme {
	t.Helper()
	s := store.NewScheme()
	if err := storetest.RegisterKinds(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// newStore returns a store over database db of the test server.
func newStore(t *testing.T, db string, scheme *store.Scheme, o Options) *Store {
	t.Helper()
	o.Database = db
	st, err := New(t.Context(), testClient(t), scheme, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close(context.Background()) })
	return st
}

func widget(ns, name string) *storetest.Widget {
	return &storetest.Widget{
		ObjectMeta: meta.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app.kubernetes.io/name": "demo"}},
		Spec:       storetest.WidgetSpec{Size: 1, Color: "red", Tags: []string{"a"}},
	}
}

func mustCreate(t *testing.T, st store.Store, obj meta.Object) {
	t.Helper()
	if err := st.Create(t.Context(), obj); err != nil {
		t.Fatalf("Create %s: %v", meta.KeyOf(obj), err)
	}
}

func nextEvent(t *testing.T, ch <-chan store.Event) store.Event {
	t.Helper()
	timer := time.NewTimer(eventTimeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatal("watch closed")
			}
			if ev.Type == store.Bookmark {
				continue
			}
			return ev
		case <-timer.C:
			t.Fatalf("no event within %v", eventTimeout)
		}
	}
}

func TestWatchEventsInOrderPerObject(t *testing.T) {
	st := newStore(t, testDatabase(t), newScheme(t), Options{})
	res, err := st.List(t.Context(), storetest.WidgetKind, store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, err := st.Watch(ctx, storetest.WidgetKind, store.WatchOptions{Revision: res.Revision})
	if err != nil {
		t.Fatal(err)
	}
	a, b := widget("ns1", "a"), widget("ns1", "b")
	type change struct {
		typ  store.EventType
		rv   string
		size int
	}
	written := map[string][]change{}
	note := func(typ store.EventType, w *storetest.Widget) {
		c := change{typ: typ, size: w.Spec.Size}
		if typ != store.Deleted {
			c.rv = w.ResourceVersion
		} else {
			c.size = 0
		}
		written[w.Name] = append(written[w.Name], c)
	}
	mustCreate(t, st, a)
	note(store.Added, a)
	mustCreate(t, st, b)
	note(store.Added, b)
	for i := range 3 {
		a.Spec.Size = 10 + i
		if err := st.Update(t.Context(), a); err != nil {
			t.Fatal(err)
		}
		note(store.Modified, a)
		b.Status.Phase = fmt.Sprint("p", i)
		if err := st.UpdateStatus(t.Context(), b); err != nil {
			t.Fatal(err)
		}
		note(store.Modified, b)
	}
	for _, w := range []*storetest.Widget{b, a} {
		if err := st.Delete(t.Context(), meta.DeepCopy(w)); err != nil {
			t.Fatal(err)
		}
		note(store.Deleted, w)
	}
	got := map[string][]change{}
	for range 10 {
		ev := nextEvent(t, ch)
		w := ev.Object.(*storetest.Widget)
		c := change{typ: ev.Type, rv: w.ResourceVersion, size: w.Spec.Size}
		got[w.Name] = append(got[w.Name], c)
	}
	for name, want := range written {
		if !slices.Equal(got[name], want) {
			t.Errorf("events of %s:\n got %+v\nwant %+v", name, got[name], want)
		}
	}
}

func TestDocumentsAreShapedLikeTheYAML(t *testing.T) {
	db := testDatabase(t)
	typed := newStore(t, db, newScheme(t), Options{})
	w := widget("ns1", "w1")
	w.Annotations = map[string]string{"a.b/c": "$x"}
	mustCreate(t, typed, w)
	raw, err := testClient(t).Database(db).Collection("widgets").FindOne(t.Context(), bson.D{{Key: "_id", Value: "ns1/w1"}}).Raw()
	if err != nil {
		t.Fatal(err)
	}
	checks := map[string]bson.Type{
		"metadata.creationTimestamp": bson.TypeDateTime,
		"metadata.resourceVersion":   bson.TypeString,
		"metadata.generation":        bson.TypeInt64,
		"metadata.uid":               bson.TypeString,
		"spec.size":                  bson.TypeInt64,
		"spec.tags":                  bson.TypeArray,
		"status":                     bson.TypeEmbeddedDocument,
	}
	for path, typ := range checks {
		v, err := raw.LookupErr(strings.Split(path, ".")...)
		if err != nil || v.Type != typ {
			t.Errorf("%s is %v (%v), want %v", path, v.Type, err, typ)
		}
	}
	if v := raw.Lookup("metadata", "labels", "app%2Ekubernetes%2Eio/name").StringValue(); v != "demo" {
		t.Errorf("escaped label key: %q", v)
	}
	if v := raw.Lookup("metadata", "resourceVersion").StringValue(); v != "1" {
		t.Errorf("resourceVersion %q", v)
	}
	if ms := raw.Lookup("metadata", "creationTimestamp").DateTime(); ms != w.CreationTimestamp.UnixMilli() {
		t.Errorf("creationTimestamp %d, want %d", ms, w.CreationTimestamp.UnixMilli())
	}

	// The same collection read and written as unstructured.
	us := store.NewScheme()
	if _, err := us.RegisterUnstructured(storetest.WidgetKind); err != nil {
		t.Fatal(err)
	}
	unstructured := newStore(t, db, us, Options{})
	u := &meta.Unstructured{Kind: storetest.WidgetKind}
	if err := unstructured.Get(t.Context(), meta.Key{Namespace: "ns1", Name: "w1"}, u); err != nil {
		t.Fatal(err)
	}
	if !u.CreationTimestamp.Equal(w.CreationTimestamp) || u.UID != w.UID || u.Labels["app.kubernetes.io/name"] != "demo" || u.Annotations["a.b/c"] != "$x" {
		t.Errorf("unstructured metadata %+v", u.ObjectMeta)
	}
	spec, _ := u.Fields["spec"].(map[string]any)
	if fmt.Sprint(spec["size"]) != "1" || spec["color"] != "red" {
		t.Errorf("unstructured spec %#v", u.Fields["spec"])
	}
	u.Fields["spec"] = map[string]any{"size": 5, "color": "blue"}
	if err := unstructured.Update(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	back := &storetest.Widget{}
	if err := typed.Get(t.Context(), meta.Key{Namespace: "ns1", Name: "w1"}, back); err != nil {
		t.Fatal(err)
	}
	if back.Spec.Size != 5 || back.Spec.Color != "blue" || back.Generation != 2 || back.ResourceVersion != "2" {
		t.Errorf("typed read of an unstructured write: %+v", back)
	}
}

func TestUpdateWithoutKnowingTheStoredSpec(t *testing.T) {
	db := testDatabase(t)
	writer := newStore(t, db, newScheme(t), Options{})
	w := widget("ns1", "w1")
	mustCreate(t, writer, w)
	steps := []struct {
		name   string
		change func(w *storetest.Widget)
		gen    int64
	}{
		{"nothing", func(*storetest.Widget) {}, 1},
		{"labels", func(w *storetest.Widget) { w.Labels["x"] = "y" }, 1},
		{"spec", func(w *storetest.Widget) { w.Spec.Size = 7 }, 2},
		{"spec again", func(w *storetest.Widget) { w.Spec.Tags = nil }, 3},
		{"status only", func(w *storetest.Widget) { w.Status.Phase = "ignored" }, 3},
		{"generation by the client", func(w *storetest.Widget) { w.Generation = 40; w.Spec.Size = 8 }, 4},
	}
	for _, step := range steps {
		// A fresh store knows nothing of the object: it must guess, and
		// its filters must keep the guess honest.
		st := newStore(t, db, newScheme(t), Options{})
		step.change(w)
		before := meta.DeepCopy(w)
		if err := st.Update(t.Context(), w); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		got := &storetest.Widget{}
		if err := writer.Get(t.Context(), meta.KeyOf(w), got); err != nil {
			t.Fatal(err)
		}
		if got.Generation != step.gen || w.Generation != step.gen {
			t.Errorf("%s: generation stored %d returned %d, want %d", step.name, got.Generation, w.Generation, step.gen)
		}
		if got.Status.Phase != "" || w.Status.Phase != "" {
			t.Errorf("%s: Update wrote status %q (returned %q)", step.name, got.Status.Phase, w.Status.Phase)
		}
		if got.Spec.Size != before.Spec.Size || got.ResourceVersion != w.ResourceVersion {
			t.Errorf("%s: stored %+v, returned %+v", step.name, got, w)
		}
	}
}

func TestConcurrentCASAcrossStoresIsExact(t *testing.T) {
	db := testDatabase(t)
	stores := []*Store{newStore(t, db, newScheme(t), Options{}), newStore(t, db, newScheme(t), Options{})}
	mustCreate(t, stores[0], widget("ns1", "counter"))
	const workers, increments = 4, 15
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for i := range workers {
		st := stores[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range increments {
				for {
					w := &storetest.Widget{}
					if err := st.Get(t.Context(), meta.Key{Namespace: "ns1", Name: "counter"}, w); err != nil {
						errc <- err
						return
					}
					w.Spec.Size++
					if i%2 == 1 {
						w.Status.Phase = "stale status the update must not write"
					}
					err := st.Update(t.Context(), w)
					if err == nil {
						break
					}
					if !errs.IsConflict(err) {
						errc <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	got := &storetest.Widget{}
	if err := stores[0].Get(t.Context(), meta.Key{Namespace: "ns1", Name: "counter"}, got); err != nil {
		t.Fatal(err)
	}
	if want := 1 + workers*increments; got.Spec.Size != want || got.Generation != int64(want) || got.ResourceVersion != fmt.Sprint(want) {
		t.Errorf("counter size %d generation %d rv %s, want %d each", got.Spec.Size, got.Generation, got.ResourceVersion, want)
	}
	if got.Status.Phase != "" {
		t.Errorf("an Update wrote status %q", got.Status.Phase)
	}
}

func TestUpdateStatusKeepsTheSizeLimit(t *testing.T) {
	st := newStore(t, testDatabase(t), newScheme(t), Options{})
	w := widget("ns1", "w1")
	w.Spec.Blob = strings.Repeat("s", store.MaxObjectBytes/2)
	mustCreate(t, st, w)
	// The incoming object is small (no blob in its spec), but stored spec
	// and new status together pass the limit.
	small := meta.DeepCopy(w)
	small.Spec.Blob = ""
	small.Status.Blob = strings.Repeat("t", store.MaxObjectBytes/2+100)
	err := st.UpdateStatus(t.Context(), small)
	if !errs.IsInvalidArgument(err) {
		t.Fatalf("UpdateStatus past the limit: %v, want InvalidArgument", err)
	}
	got := &storetest.Widget{}
	if err := st.Get(t.Context(), meta.KeyOf(w), got); err != nil {
		t.Fatal(err)
	}
	if got.ResourceVersion != w.ResourceVersion || got.Status.Blob != "" {
		t.Errorf("a refused UpdateStatus changed the object: rv %s", got.ResourceVersion)
	}
	// Just within the limit is fine.
	small.Status.Blob = strings.Repeat("t", store.MaxObjectBytes/2-2000)
	if err := st.UpdateStatus(t.Context(), small); err != nil {
		t.Fatalf("UpdateStatus within the limit: %v", err)
	}
	if small.Spec.Blob != w.Spec.Blob || small.ResourceVersion != "2" {
		t.Errorf("UpdateStatus returned spec blob of %d bytes, rv %s", len(small.Spec.Blob), small.ResourceVersion)
	}
}

func TestIndexesAreEnsuredOnce(t *testing.T) {
	db := testDatabase(t)
	newStore(t, db, newScheme(t), Options{})
	newStore(t, db, newScheme(t), Options{})
	specs, err := testClient(t).Database(db).Collection("widgets").Indexes().ListSpecifications(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	unique := map[string]bool{}
	for _, s := range specs {
		count[s.Name]++
		unique[s.Name] = s.Unique != nil && *s.Unique
	}
	if count["uid"] != 1 || !unique["uid"] || count["namespace_name"] != 1 {
		t.Errorf("indexes: %v", specs)
	}
}

func TestOptions(t *testing.T) {
	if _, err := New(t.Context(), testClient(t), newScheme(t), Options{Database: "bad.name"}); !errs.IsInvalidArgument(err) {
		t.Errorf("a database name with a dot: %v", err)
	}
	if _, err := New(t.Context(), testClient(t), newScheme(t), Options{WatchMode: "sometimes"}); !errs.IsInvalidArgument(err) {
		t.Errorf("an unknown watch mode: %v", err)
	}
	for in, want := range map[string]WatchMode{"": WatchAuto, "OPLOG": WatchOplog, "changestream": WatchChangeStream} {
		if got, err := ParseWatchMode(in); err != nil || got != want {
			t.Errorf("ParseWatchMode(%q) = %s, %v", in, got, err)
		}
	}
	if os.Getenv(mongotest.EnvURI) == "" {
		st := newStore(t, testDatabase(t), newScheme(t), Options{})
		if st.WatchMode() != WatchOplog {
			t.Errorf("auto chose %s on the embedded server", st.WatchMode())
		}
	}
}

func TestWatchRefusesAnotherModesRevision(t *testing.T) {
	st := newStore(t, testDatabase(t), newScheme(t), Options{})
	tok, _ := bson.Marshal(bson.D{{Key: "_data", Value: "82"}})
	other := changes.TokenPosition(tok).String()
	if st.WatchMode() == WatchChangeStream {
		other = changes.OplogPosition(bson.Timestamp{T: 1}).String()
	}
	_, err := st.Watch(t.Context(), storetest.WidgetKind, store.WatchOptions{Revision: other})
	if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != "revision" {
		t.Errorf("Watch from %s: %v, want InvalidArgument on revision", other, err)
	}
	_, err = st.List(t.Context(), storetest.WidgetKind, store.ListOptions{Limit: 1, Continue: continueToken{V: 1, Revision: other, Name: "x"}.encode()})
	if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != "continue" {
		t.Errorf("List continuing from another mode's revision: %v", err)
	}
}

// dedicated returns a store that owns its client on a server of its own,
// which the test may stop and start.
func dedicated(t *testing.T) (*Store, func(context.Context) error, func(context.Context) error) {
	t.Helper()
	srv := mongotest.NewServer(t)
	st, err := Open(t.Context(), srv.URI(), newScheme(t), Options{
		Database: "db",
		Timeout:  20 * time.Second,
		Connect:  mongox.ConnectOptions{ServerSelectionTimeout: time.Second, HeartbeatInterval: 500 * time.Millisecond},
		Changes:  changes.Options{RetryMax: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close(context.Background()) })
	return st, srv.Stop, srv.Start
}

func TestErrorCodesThroughTheStore(t *testing.T) {
	st, stop, start := dedicated(t)
	w := widget("ns1", "w1")
	mustCreate(t, st, w)
	if err := st.Create(t.Context(), widget("ns1", "w1")); !errs.IsAlreadyExists(err) {
		t.Errorf("duplicate Create: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Nanosecond)
	<-ctx.Done()
	if err := st.Get(ctx, meta.KeyOf(w), &storetest.Widget{}); !errs.IsDeadlineExceeded(err) {
		t.Errorf("Get past its deadline: %v", err)
	}
	cancel()
	sctx, scancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer scancel()
	if err := stop(sctx); err != nil {
		t.Fatal(err)
	}
	for i, op := range []func() error{
		func() error { return st.Get(t.Context(), meta.KeyOf(w), &storetest.Widget{}) },
		func() error { return st.Create(t.Context(), widget("ns1", "w2")) },
		func() error { return st.Update(t.Context(), meta.DeepCopy(w)) },
		func() error { _, err := st.List(t.Context(), storetest.WidgetKind, store.ListOptions{}); return err },
	} {
		if err := op(); !errs.IsUnavailable(err) {
			t.Errorf("operation %d while the server is down: %v, want Unavailable", i, err)
		}
	}
	if err := start(sctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(eventTimeout)
	for st.Get(t.Context(), meta.KeyOf(w), &storetest.Widget{}) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the store did not recover after the restart")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestWatchSurvivesServerRestart(t *testing.T) {
	st, stop, start := dedicated(t)
	mustCreate(t, st, widget("ns1", "before"))
	res, err := st.List(t.Context(), storetest.WidgetKind, store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, err := st.Watch(ctx, storetest.WidgetKind, store.WatchOptions{Revision: res.Revision})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, st, widget("ns1", "a"))
	if ev := nextEvent(t, ch); ev.Type != store.Added || ev.Object.GetObjectMeta().Name != "a" {
		t.Fatalf("got %s %s", ev.Type, meta.KeyOf(ev.Object))
	}
	sctx, scancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer scancel()
	if err := stop(sctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if err := start(sctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"b", "c"} {
		deadline := time.Now().Add(eventTimeout)
		for {
			err := st.Create(t.Context(), widget("ns1", name))
			if err == nil {
				break
			}
			if !errs.IsUnavailable(err) || time.Now().After(deadline) {
				t.Fatalf("Create %s after the restart: %v", name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, name := range []string{"b", "c"} {
		ev := nextEvent(t, ch)
		if ev.Type != store.Added || ev.Object.GetObjectMeta().Name != name {
			t.Fatalf("after the restart got %s %v (err %v), want Added %s", ev.Type, ev.Object, ev.Err, name)
		}
	}
}

// TestChangeStreamConformance runs the conformance suite in change-stream
// mode; it needs MONGODB_URI to name a replica set.
func TestChangeStreamConformance(t *testing.T) {
	if os.Getenv(mongotest.EnvURI) == "" {
		t.Skip("change streams need a replica set: set MONGODB_URI to one to run this test")
	}
	info, err := mongox.Describe(t.Context(), testClient(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.ReplicaSet == "" && !info.Sharded {
		t.Skip("MONGODB_URI is not a replica set or sharded cluster")
	}
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T, scheme *store.Scheme) store.Store {
			return newStore(t, testDatabase(t), scheme, Options{WatchMode: WatchChangeStream, BookmarkInterval: 500 * time.Millisecond})
		},
		EventTimeout: eventTimeout,
	})
}
