package storetest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

func (s *suite) invalidTests() []test {
	return []test{
		{"CreateStoresNothing", s.testInvalidCreate},
		{"UpdateChangesNothing", s.testInvalidUpdate},
		{"UpdateStatusChangesNothing", s.testInvalidUpdateStatus},
		{"MalformedUnstructuredDocuments", s.testInvalidUnstructuredDocuments},
		{"UnknownKind", s.testInvalidUnknownKind},
		{"KeysAndNamespaceFilters", s.testInvalidKeys},
	}
}

func (s *suite) testInvalidKeys(t *testing.T) {
	st := s.newStore(t)
	mustCreate(t, st, widget("ns1", "w1"))
	mustCreate(t, st, &Gizmo{ObjectMeta: meta.ObjectMeta{Name: "g1"}})
	want := frozenWidget(t, st, "ns1", "w1")
	widgetKeys := []struct {
		key   meta.Key
		field string
	}{
		{meta.Key{Name: "w1"}, "metadata.namespace"},
		{meta.Key{Namespace: "ns1", Name: "Bad"}, "metadata.name"},
		{meta.Key{Namespace: "ns1", Name: ""}, "metadata.name"},
		{meta.Key{Namespace: "ns1", Name: "a/b"}, "metadata.name"},
		{meta.Key{Namespace: "NS", Name: "w1"}, "metadata.namespace"},
	}
	for _, c := range widgetKeys {
		err := st.Get(ctx(t), c.key, &Widget{})
		wantCode(t, fmt.Sprintf("Get %+v", c.key), err, errs.InvalidArgument, c.field)
		err = st.Delete(ctx(t), &Widget{ObjectMeta: meta.ObjectMeta{Namespace: c.key.Namespace, Name: c.key.Name}})
		wantCode(t, fmt.Sprintf("Delete %+v", c.key), err, errs.InvalidArgument, c.field)
		err = st.UpdateStatus(ctx(t), &Widget{ObjectMeta: meta.ObjectMeta{Namespace: c.key.Namespace, Name: c.key.Name}})
		wantCode(t, fmt.Sprintf("UpdateStatus %+v", c.key), err, errs.InvalidArgument, c.field)
	}
	err := st.Get(ctx(t), meta.Key{Namespace: "ns1", Name: "g1"}, &Gizmo{})
	wantCode(t, "Get of a cluster-scoped object with a namespace", err, errs.InvalidArgument, "metadata.namespace")
	err = st.Delete(ctx(t), &Gizmo{ObjectMeta: meta.ObjectMeta{Namespace: "ns1", Name: "g1"}})
	wantCode(t, "Delete of a cluster-scoped object with a namespace", err, errs.InvalidArgument, "metadata.namespace")
	if err := st.Get(ctx(t), meta.Key{Name: "g1"}, &Gizmo{}); err != nil {
		t.Errorf("Gizmo after bad deletes: %v", err)
	}
	checkStored(t, st, want)

	_, err = st.List(ctx(t), GizmoKind, store.ListOptions{Namespace: "ns1"})
	wantCode(t, "List of a cluster-scoped kind in a namespace", err, errs.InvalidArgument, "namespace")
	_, err = st.Watch(ctx(t), GizmoKind, store.WatchOptions{Namespace: "ns1"})
	wantCode(t, "Watch of a cluster-scoped kind in a namespace", err, errs.InvalidArgument, "namespace")
	_, err = st.List(ctx(t), WidgetKind, store.ListOptions{Limit: -1})
	wantCode(t, "List with a negative limit", err, errs.InvalidArgument, "limit")
}

// oversize is a spec string that makes an object exceed MaxObjectBytes.
var oversize = strings.Repeat("x", store.MaxObjectBytes+1)

// badWidget is a case of invalid input: a change to a valid widget and
// the field the error must name ("-" for any).
type badWidget struct {
	name   string
	change func(w *Widget)
	field  string
}

func badWidgets() []badWidget {
	return []badWidget{
		{"uppercase name", func(w *Widget) { w.Name = "Bad" }, "metadata.name"},
		{"name too long", func(w *Widget) { w.Name = strings.Repeat("a", 254) }, "metadata.name"},
		{"empty name", func(w *Widget) { w.Name = "" }, "metadata.name"},
		{"name with a slash", func(w *Widget) { w.Name = "a/b" }, "metadata.name"},
		{"name with a space", func(w *Widget) { w.Name = "a b" }, "metadata.name"},
		{"missing namespace", func(w *Widget) { w.Namespace = "" }, "metadata.namespace"},
		{"uppercase namespace", func(w *Widget) { w.Namespace = "NS" }, "metadata.namespace"},
		{"namespace with a dot", func(w *Widget) { w.Namespace = "a.b" }, "metadata.namespace"},
		{"bad label key", func(w *Widget) { w.Labels = map[string]string{"bad key!": "v"} }, "metadata.labels[bad key!]"},
		{"label key too long", func(w *Widget) { w.Labels = map[string]string{strings.Repeat("k", 64): "v"} }, "metadata.labels[" + strings.Repeat("k", 64) + "]"},
		{"bad label value", func(w *Widget) { w.Labels = map[string]string{"k": "bad value"} }, "metadata.labels[k]"},
		{"label value too long", func(w *Widget) { w.Labels = map[string]string{"k": strings.Repeat("v", 64)} }, "metadata.labels[k]"},
		{"bad annotation key", func(w *Widget) { w.Annotations = map[string]string{"bad key!": "v"} }, "metadata.annotations[bad key!]"},
		{"bad finalizer", func(w *Widget) { w.Finalizers = []string{"ok.example/f", "bad finalizer"} }, "metadata.finalizers[1]"},
		{"duplicate finalizer", func(w *Widget) { w.Finalizers = []string{"example.com/f", "example.com/f"} }, "metadata.finalizers[1]"},
		{"owner without uid", func(w *Widget) {
			w.OwnerReferences = []meta.OwnerReference{{Kind: "Gizmo", Name: "g"}}
		}, "metadata.ownerReferences[0].uid"},
		{"owner with a bad name", func(w *Widget) {
			w.OwnerReferences = []meta.OwnerReference{{Kind: "Gizmo", Name: "G!", UID: "u"}}
		}, "metadata.ownerReferences[0].name"},
		{"two controllers", func(w *Widget) {
			w.OwnerReferences = []meta.OwnerReference{
				{Kind: "Gizmo", Name: "a", UID: "u1", Controller: true},
				{Kind: "Gizmo", Name: "b", UID: "u2", Controller: true},
			}
		}, "metadata.ownerReferences"},
		{"oversize", func(w *Widget) { w.Spec.Blob = oversize }, "-"},
	}
}

// checkNothingStored fails unless ns1 has exactly the widgets named in
// want, unchanged.
func checkStored(t *testing.T, st store.Store, want ...*Widget) {
	t.Helper()
	res := list(t, st, WidgetKind, store.ListOptions{})
	if len(res.Items) != len(want) {
		t.Fatalf("store holds %v after bad input, want %d objects", keysOf(res.Items), len(want))
	}
	for i, it := range res.Items {
		if !sameWidget(it.(*Widget), want[i]) {
			t.Errorf("after bad input, stored %+v, want %+v", it, want[i])
		}
	}
}

func (s *suite) testInvalidCreate(t *testing.T) {
	st := s.newStore(t)
	for _, c := range badWidgets() {
		w := widget("ns1", "w1")
		c.change(w)
		err := st.Create(ctx(t), w)
		wantCode(t, "Create with "+c.name, err, errs.InvalidArgument, c.field)
		checkStored(t, st)
	}

	g := &Gizmo{ObjectMeta: meta.ObjectMeta{Name: "g1", Namespace: "ns1"}}
	err := st.Create(ctx(t), g)
	wantCode(t, "Create of a cluster-scoped object with a namespace", err, errs.InvalidArgument, "metadata.namespace")
	res := list(t, st, GizmoKind, store.ListOptions{})
	if len(res.Items) != 0 {
		t.Errorf("store holds %v after bad input", keysOf(res.Items))
	}

	for _, c := range []struct {
		name  string
		set   func(u *meta.Unstructured)
		field string
	}{
		{"$set field", func(u *meta.Unstructured) { u.SetField("$set", map[string]any{"a": 1}) }, "$set"},
		{"_id field", func(u *meta.Unstructured) { u.SetField("_id", "x") }, "_id"},
		{"dotted field", func(u *meta.Unstructured) { u.SetField("a.b", 1) }, "a.b"},
		{"metadata field", func(u *meta.Unstructured) { u.SetField("metadata", map[string]any{"name": "x"}) }, "metadata"},
		{"bad name", func(u *meta.Unstructured) { u.Name = "Bad" }, "metadata.name"},
		{"missing namespace", func(u *meta.Unstructured) { u.Namespace = "" }, "metadata.namespace"},
		{"bad label", func(u *meta.Unstructured) { u.Labels = map[string]string{"k": "bad value"} }, "metadata.labels[k]"},
		{"oversize", func(u *meta.Unstructured) { u.SetField("blob", oversize) }, "-"},
		{"unencodable field", func(u *meta.Unstructured) { u.SetField("spec", map[string]any{"f": func() {}}) }, "-"},
	} {
		u := doodad("ns1", "d1")
		c.set(u)
		err := st.Create(ctx(t), u)
		wantCode(t, "unstructured Create with "+c.name, err, errs.InvalidArgument, c.field)
		res := list(t, st, DoodadKind, store.ListOptions{})
		if len(res.Items) != 0 {
			t.Fatalf("store holds %v after bad input", keysOf(res.Items))
		}
	}
}

func (s *suite) testInvalidUpdate(t *testing.T) {
	st := s.newStore(t)
	created := widget("ns1", "w1")
	mustCreate(t, st, created)
	orig := frozen(t, created)
	for _, c := range badWidgets() {
		w := meta.DeepCopy(orig)
		c.change(w)
		err := st.Update(ctx(t), w)
		// A changed key addresses another, missing object: NotFound is
		// as right as InvalidArgument, as long as nothing is written.
		if c.field == "metadata.name" || c.field == "metadata.namespace" {
			if !errs.IsInvalidArgument(err) && !errs.IsNotFound(err) {
				t.Errorf("Update with %s: got %v, want InvalidArgument or NotFound", c.name, err)
			}
		} else {
			wantCode(t, "Update with "+c.name, err, errs.InvalidArgument, c.field)
		}
		checkStored(t, st, orig)
	}
	w := meta.DeepCopy(orig)
	w.ResourceVersion = "not-a-number"
	w.Spec.Size = 5
	err := st.Update(ctx(t), w)
	wantCode(t, "Update with a malformed resourceVersion", err, errs.InvalidArgument, "metadata.resourceVersion")
	checkStored(t, st, orig)

	u := doodad("ns1", "d1")
	mustCreate(t, st, u)
	for _, field := range []string{"$set", "_id", "a.b"} {
		bad := meta.DeepCopy(u)
		bad.SetField(field, 1)
		err := st.Update(ctx(t), bad)
		wantCode(t, "unstructured Update with field "+field, err, errs.InvalidArgument, field)
	}
	got := &meta.Unstructured{Kind: DoodadKind}
	if err := st.Get(ctx(t), meta.KeyOf(u), got); err != nil {
		t.Fatal(err)
	}
	if got.ResourceVersion != u.ResourceVersion || !sameJSON(got.Fields, u.Fields) {
		t.Errorf("bad unstructured Updates changed the object: %+v", got)
	}
}

func (s *suite) testInvalidUpdateStatus(t *testing.T) {
	st := s.newStore(t)
	created := widget("ns1", "w1")
	mustCreate(t, st, created)
	orig := frozen(t, created)
	w := meta.DeepCopy(orig)
	w.Status.Blob = oversize
	err := st.UpdateStatus(ctx(t), w)
	wantCode(t, "UpdateStatus making the object oversize", err, errs.InvalidArgument, "-")
	checkStored(t, st, orig)

	w = meta.DeepCopy(orig)
	w.ResourceVersion = "not-a-number"
	w.Status.Phase = "x"
	err = st.UpdateStatus(ctx(t), w)
	wantCode(t, "UpdateStatus with a malformed resourceVersion", err, errs.InvalidArgument, "metadata.resourceVersion")
	checkStored(t, st, orig)
}

func (s *suite) testInvalidUnstructuredDocuments(t *testing.T) {
	st := s.newStore(t)
	cases := []struct {
		name, doc, field string
	}{
		{"metadata not an object", `{"kind":"Doodad","metadata":"x"}`, "metadata"},
		{"metadata a list", `{"kind":"Doodad","metadata":[1]}`, "metadata"},
		{"kind not a string", `{"kind":5,"metadata":{"name":"d1","namespace":"ns1"}}`, "kind"},
		{"apiVersion not a string", `{"kind":"Doodad","apiVersion":{},"metadata":{"name":"d1"}}`, "apiVersion"},
		{"name not a string", `{"kind":"Doodad","metadata":{"name":7,"namespace":"ns1"}}`, "metadata.name"},
		{"labels not a map of strings", `{"kind":"Doodad","metadata":{"name":"d1","labels":{"a":1}}}`, "metadata.labels"},
		{"unknown metadata field", `{"kind":"Doodad","metadata":{"name":"d1","nmae":"x"}}`, "metadata.nmae"},
		{"not an object", `[1,2]`, ""},
		{"null", `null`, ""},
	}
	for _, c := range cases {
		var u meta.Unstructured
		err := u.UnmarshalJSON([]byte(c.doc))
		wantCode(t, "decoding "+c.name, err, errs.InvalidArgument, c.field)
	}
	// What does decode, the store must still refuse.
	var u meta.Unstructured
	if err := u.UnmarshalJSON([]byte(`{"kind":"Doodad","metadata":{"name":"d1","namespace":"ns1"},"_id":1,"spec":{}}`)); err != nil {
		t.Fatal(err)
	}
	err := st.Create(ctx(t), &u)
	wantCode(t, "Create of a decoded document with _id", err, errs.InvalidArgument, "_id")
	if res := list(t, st, DoodadKind, store.ListOptions{}); len(res.Items) != 0 {
		t.Errorf("store holds %v after bad input", keysOf(res.Items))
	}
}

func (s *suite) testInvalidUnknownKind(t *testing.T) {
	st := s.newStore(t)
	err := st.Create(ctx(t), &Unregistered{ObjectMeta: meta.ObjectMeta{Namespace: "ns1", Name: "x"}})
	wantCode(t, "Create of an unregistered type", err, errs.InvalidArgument, "kind")
	err = st.Create(ctx(t), &meta.Unstructured{Kind: "Nope", ObjectMeta: meta.ObjectMeta{Namespace: "ns1", Name: "x"}})
	wantCode(t, "Create of an unknown unstructured kind", err, errs.InvalidArgument, "kind")
	err = st.Create(ctx(t), &meta.Unstructured{ObjectMeta: meta.ObjectMeta{Namespace: "ns1", Name: "x"}})
	wantCode(t, "Create of an unstructured object without kind", err, errs.InvalidArgument, "kind")
	err = st.Update(ctx(t), &Unregistered{ObjectMeta: meta.ObjectMeta{Namespace: "ns1", Name: "x"}})
	wantCode(t, "Update of an unregistered type", err, errs.InvalidArgument, "kind")
	err = st.Delete(ctx(t), &meta.Unstructured{Kind: "Nope", ObjectMeta: meta.ObjectMeta{Namespace: "ns1", Name: "x"}})
	wantCode(t, "Delete of an unknown kind", err, errs.InvalidArgument, "kind")
}

func (s *suite) closeTests() []test {
	return []test{
		{"EndsWatches", s.testCloseEndsWatches},
	}
}

func (s *suite) testCloseEndsWatches(t *testing.T) {
	st := s.newStore(t)
	w := s.watchFromList(t, st, WidgetKind, store.WatchOptions{})
	mustCreate(t, st, widget("ns1", "w1"))
	w.expect(store.Added, meta.Key{Namespace: "ns1", Name: "w1"})
	c, cancel := context.WithTimeout(ctx(t), s.h.EventTimeout)
	defer cancel()
	if err := st.Close(c); err != nil {
		t.Fatalf("Close: %v", err)
	}
	w.closed()
}
