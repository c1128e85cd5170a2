package storetest

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

func (s *suite) createTests() []test {
	return []test{
		{"FillsStoreOwnedFields", s.testCreateFillsStoreOwnedFields},
		{"ResultIsCallersCopy", s.testCreateResultIsCallersCopy},
		{"InputIsNotShared", s.testCreateInputIsNotShared},
		{"AlreadyExists", s.testCreateAlreadyExists},
		{"ConcurrentSameKeyOneWins", s.testCreateConcurrentSameKeyOneWins},
		{"SameNameElsewhere", s.testCreateSameNameElsewhere},
		{"ClusterScoped", s.testCreateClusterScoped},
		{"Unstructured", s.testCreateUnstructured},
		{"UnstructuredFromDocument", s.testCreateUnstructuredFromDocument},
	}
}

func (s *suite) getTests() []test {
	return []test{
		{"NotFound", s.testGetNotFound},
		{"ReturnsIsolatedCopies", s.testGetReturnsIsolatedCopies},
		{"UnknownKind", s.testGetUnknownKind},
	}
}

func (s *suite) testCreateFillsStoreOwnedFields(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "w1")
	past := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	w.UID = "made-up-uid"
	w.ResourceVersion = "12345"
	w.Generation = 7
	w.CreationTimestamp = past
	w.DeletionTimestamp = &past
	w.Fences = map[string]int64{"Lock/ns1/l": 3}
	before := time.Now().Add(-time.Second)
	mustCreate(t, st, w)
	after := time.Now().Add(time.Second)

	if w.UID == "" || w.UID == "made-up-uid" {
		t.Errorf("uid = %q, want one the store assigned", w.UID)
	}
	rvOf(t, w)
	if w.Generation != 1 {
		t.Errorf("generation = %d, want 1", w.Generation)
	}
	ct := w.CreationTimestamp
	if ct.Before(before) || ct.After(after) {
		t.Errorf("creationTimestamp = %v, want about now", ct)
	}
	if ct.Location() != time.UTC || ct.Nanosecond()%int(time.Millisecond) != 0 {
		t.Errorf("creationTimestamp = %v, want UTC with millisecond precision", ct)
	}
	if w.DeletionTimestamp != nil {
		t.Errorf("deletionTimestamp = %v, want nil", w.DeletionTimestamp)
	}
	if len(w.Fences) != 0 {
		t.Errorf("fences = %v, want none (store-owned)", w.Fences)
	}
	got := mustGetWidget(t, st, "ns1", "w1")
	if !sameWidget(got, w) {
		t.Errorf("Get = %+v, want what Create returned %+v", got, w)
	}
	if !got.CreationTimestamp.Equal(w.CreationTimestamp) {
		t.Errorf("Get creationTimestamp %v, Create returned %v", got.CreationTimestamp, w.CreationTimestamp)
	}
}

func (s *suite) testCreateResultIsCallersCopy(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "w1")
	mustCreate(t, st, w)
	want := frozenWidget(t, st, "ns1", "w1")
	w.Spec.Tags[0] = "changed"
	w.Spec.Nested["k"] = "changed"
	w.Labels["app"] = "changed"
	w.Spec.Size = 99
	if got := mustGetWidget(t, st, "ns1", "w1"); !sameWidget(got, want) {
		t.Errorf("mutating Create's result changed the store: got %+v, want %+v", got, want)
	}
}

func (s *suite) testCreateInputIsNotShared(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "w1")
	tags, nested, lbls := w.Spec.Tags, w.Spec.Nested, w.Labels
	mustCreate(t, st, w)
	want := frozenWidget(t, st, "ns1", "w1")
	// The slices and maps the caller built before the call.
	tags[1] = "changed"
	nested["new"] = "x"
	lbls["other"] = "x"
	if got := mustGetWidget(t, st, "ns1", "w1"); !sameWidget(got, want) {
		t.Errorf("mutating Create's input changed the store: got %+v, want %+v", got, want)
	}

	u := doodad("ns1", "d1")
	spec := u.Fields["spec"].(map[string]any)
	mustCreate(t, st, u)
	spec["size"] = 42
	spec["inner"].(map[string]any)["k"] = "changed"
	got := &meta.Unstructured{Kind: DoodadKind}
	if err := st.Get(ctx(t), meta.Key{Namespace: "ns1", Name: "d1"}, got); err != nil {
		t.Fatal(err)
	}
	if !sameJSON(got.Fields["spec"], doodad("ns1", "d1").Fields["spec"]) {
		t.Errorf("mutating an unstructured Create's input changed the store: spec %v", got.Fields["spec"])
	}
}

func (s *suite) testCreateAlreadyExists(t *testing.T) {
	st := s.newStore(t)
	mustCreate(t, st, widget("ns1", "w1"))
	want := frozenWidget(t, st, "ns1", "w1")
	dup := widget("ns1", "w1")
	dup.Spec.Size = 2
	err := st.Create(ctx(t), dup)
	wantCode(t, "Create of an existing key", err, errs.AlreadyExists, "-")
	if got := mustGetWidget(t, st, "ns1", "w1"); !sameWidget(got, want) {
		t.Errorf("failed Create changed the stored object: got %+v, want %+v", got, want)
	}
}

func (s *suite) testCreateConcurrentSameKeyOneWins(t *testing.T) {
	st := s.newStore(t)
	const n = 8
	errc := make(chan error, n)
	var start sync.WaitGroup
	start.Add(1)
	for i := range n {
		go func() {
			start.Wait()
			w := widget("ns1", "w1")
			w.Spec.Size = i
			errc <- st.Create(ctx(t), w)
		}()
	}
	start.Done()
	wins := 0
	for range n {
		err := <-errc
		switch {
		case err == nil:
			wins++
		case errs.IsAlreadyExists(err):
		default:
			t.Errorf("concurrent Create: %v", err)
		}
	}
	if wins != 1 {
		t.Errorf("%d concurrent Creates of one key succeeded, want 1", wins)
	}
}

func (s *suite) testCreateSameNameElsewhere(t *testing.T) {
	st := s.newStore(t)
	mustCreate(t, st, widget("ns1", "same"))
	mustCreate(t, st, widget("ns2", "same"))
	mustCreate(t, st, doodad("ns1", "same"))
	mustCreate(t, st, &Gizmo{ObjectMeta: meta.ObjectMeta{Name: "same"}})
	a, b := mustGetWidget(t, st, "ns1", "same"), mustGetWidget(t, st, "ns2", "same")
	if a.UID == b.UID {
		t.Errorf("objects in two namespaces share uid %s", a.UID)
	}
}

func (s *suite) testCreateClusterScoped(t *testing.T) {
	st := s.newStore(t)
	g := &Gizmo{ObjectMeta: meta.ObjectMeta{Name: "g1"}, Spec: GizmoSpec{Size: 3}}
	mustCreate(t, st, g)
	got := &Gizmo{}
	if err := st.Get(ctx(t), meta.Key{Name: "g1"}, got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Size != 3 || got.UID != g.UID || got.Namespace != "" {
		t.Errorf("Get = %+v, want %+v", got, g)
	}
}

func (s *suite) testCreateUnstructured(t *testing.T) {
	st := s.newStore(t)
	u := doodad("ns1", "d1")
	u.SetField("extra", "top-level")
	u.Labels = map[string]string{"app": "demo"}
	mustCreate(t, st, u)
	if u.UID == "" || u.Generation != 1 || u.CreationTimestamp.IsZero() {
		t.Errorf("Create did not fill store-owned fields: %+v", u.ObjectMeta)
	}
	rvOf(t, u)
	got := &meta.Unstructured{Kind: DoodadKind}
	if err := st.Get(ctx(t), meta.Key{Namespace: "ns1", Name: "d1"}, got); err != nil {
		t.Fatal(err)
	}
	if got.Kind != DoodadKind {
		t.Errorf("Get kind = %q, want %q", got.Kind, DoodadKind)
	}
	if !sameJSON(got.Fields, u.Fields) {
		t.Errorf("Get fields = %v, want %v", got.Fields, u.Fields)
	}
	if !sameJSON(got.ObjectMeta, u.ObjectMeta) {
		t.Errorf("Get metadata = %+v, want %+v", got.ObjectMeta, u.ObjectMeta)
	}
}

func (s *suite) testGetNotFound(t *testing.T) {
	st := s.newStore(t)
	mustCreate(t, st, widget("ns1", "w1"))
	for _, key := range []meta.Key{{Namespace: "ns1", Name: "nope"}, {Namespace: "ns2", Name: "w1"}} {
		err := st.Get(ctx(t), key, &Widget{})
		wantCode(t, "Get "+key.String(), err, errs.NotFound, "-")
	}
	err := st.Get(ctx(t), meta.Key{Name: "nope"}, &Gizmo{})
	wantCode(t, "Get missing cluster-scoped object", err, errs.NotFound, "-")
	err = st.Get(ctx(t), meta.Key{Namespace: "ns1", Name: "nope"}, &meta.Unstructured{Kind: DoodadKind})
	wantCode(t, "Get missing unstructured object", err, errs.NotFound, "-")
}

func (s *suite) testGetReturnsIsolatedCopies(t *testing.T) {
	st := s.newStore(t)
	mustCreate(t, st, widget("ns1", "w1"))
	a := mustGetWidget(t, st, "ns1", "w1")
	want := frozenWidget(t, st, "ns1", "w1")
	a.Spec.Tags[0] = "changed"
	a.Spec.Nested["k"] = "changed"
	a.Labels["app"] = "changed"
	if b := mustGetWidget(t, st, "ns1", "w1"); !sameWidget(b, want) {
		t.Errorf("mutating a Get result changed the store: got %+v, want %+v", b, want)
	}

	mustCreate(t, st, doodad("ns1", "d1"))
	u := &meta.Unstructured{Kind: DoodadKind}
	key := meta.Key{Namespace: "ns1", Name: "d1"}
	if err := st.Get(ctx(t), key, u); err != nil {
		t.Fatal(err)
	}
	u.Fields["spec"].(map[string]any)["inner"].(map[string]any)["k"] = "changed"
	u2 := &meta.Unstructured{Kind: DoodadKind}
	if err := st.Get(ctx(t), key, u2); err != nil {
		t.Fatal(err)
	}
	if !sameJSON(u2.Fields["spec"], doodad("ns1", "d1").Fields["spec"]) {
		t.Errorf("mutating an unstructured Get result changed the store: %v", u2.Fields["spec"])
	}
}

func (s *suite) testGetUnknownKind(t *testing.T) {
	st := s.newStore(t)
	err := st.Get(ctx(t), meta.Key{Namespace: "ns1", Name: "x"}, &Unregistered{})
	wantCode(t, "Get of an unregistered type", err, errs.InvalidArgument, "kind")
	err = st.Get(ctx(t), meta.Key{Namespace: "ns1", Name: "x"}, &meta.Unstructured{Kind: "Nope"})
	wantCode(t, "Get of an unknown unstructured kind", err, errs.InvalidArgument, "kind")
	_, err = st.List(ctx(t), "Nope", store.ListOptions{})
	wantCode(t, "List of an unknown kind", err, errs.InvalidArgument, "kind")
}

func (s *suite) testCreateUnstructuredFromDocument(t *testing.T) {
	st := s.newStore(t)
	doc := `{"kind":"Doodad","apiVersion":"example.com/v1",
		"metadata":{"name":"d1","namespace":"ns1","labels":{"app":"x"},"annotations":{"note":"n"}},
		"spec":{"int":42,"neg":-3,"float":0.5,"exp":1e3,"str":"s","bool":true,"null":null,
			"list":[1,"two",{"three":[3]}],"empty":{},"emptyList":[]},
		"status":{"phase":"New"}}`
	var u meta.Unstructured
	if err := u.UnmarshalJSON([]byte(doc)); err != nil {
		t.Fatal(err)
	}
	want := meta.DeepCopy(&u)
	mustCreate(t, st, &u)
	got := &meta.Unstructured{Kind: DoodadKind}
	if err := st.Get(ctx(t), meta.Key{Namespace: "ns1", Name: "d1"}, got); err != nil {
		t.Fatal(err)
	}
	if !sameJSON(got.Fields, want.Fields) {
		t.Errorf("fields after a round trip:\n got %v\nwant %v", normalJSON(got.Fields), normalJSON(want.Fields))
	}
	if got.Labels["app"] != "x" || got.Annotations["note"] != "n" {
		t.Errorf("metadata after a round trip: %+v", got.ObjectMeta)
	}
	data, err := json.Marshal(got)
	if err != nil {
		t.Fatalf("a stored object does not encode: %v", err)
	}
	var again meta.Unstructured
	if err := again.UnmarshalJSON(data); err != nil {
		t.Fatalf("a stored object's encoding does not decode: %v", err)
	}
}
