package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

func (s *suite) deleteTests() []test {
	return []test{
		{"RemovesObjectWithoutFinalizers", s.testDeleteRemovesObjectWithoutFinalizers},
		{"MissingIsNotFound", s.testDeleteMissingIsNotFound},
		{"Preconditions", s.testDeletePreconditions},
		{"FinalizerFlow", s.testDeleteFinalizerFlow},
		{"RecreateGetsNewUID", s.testDeleteRecreateGetsNewUID},
		{"ClusterScopedAndUnstructured", s.testDeleteClusterScopedAndUnstructured},
		{"ConcurrentDeletesOneWins", s.testDeleteConcurrentDeletesOneWins},
		{"PreconditionsWhileDeleting", s.testDeletePreconditionsWhileDeleting},
	}
}

func (s *suite) testDeleteConcurrentDeletesOneWins(t *testing.T) {
	st := s.newStore(t)
	mustCreate(t, st, widget("ns1", "w1"))
	const n = 8
	errc := make(chan error, n)
	var start sync.WaitGroup
	start.Add(1)
	for range n {
		go func() {
			start.Wait()
			errc <- st.Delete(ctx(t), widget("ns1", "w1"))
		}()
	}
	start.Done()
	wins := 0
	for range n {
		err := <-errc
		switch {
		case err == nil:
			wins++
		case errs.IsNotFound(err):
		default:
			t.Errorf("concurrent Delete: %v", err)
		}
	}
	if wins != 1 {
		t.Errorf("%d concurrent Deletes succeeded, want 1", wins)
	}
}

func (s *suite) testDeletePreconditionsWhileDeleting(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "w1")
	w.Finalizers = []string{"example.com/f"}
	mustCreate(t, st, w)
	if err := st.Delete(ctx(t), widget("ns1", "w1")); err != nil {
		t.Fatal(err)
	}
	marked := mustGetWidget(t, st, "ns1", "w1")
	err := st.Delete(ctx(t), widget("ns1", "w1"), store.WithPreconditions(store.Preconditions{ResourceVersion: w.ResourceVersion}))
	wantCode(t, "Delete of an object being deleted with a stale resourceVersion", err, errs.Conflict, "metadata.resourceVersion")
	again := widget("ns1", "w1")
	if err := st.Delete(ctx(t), again, store.WithPreconditions(store.Preconditions{UID: w.UID, ResourceVersion: marked.ResourceVersion})); err != nil {
		t.Errorf("Delete of an object being deleted with matching preconditions: %v", err)
	}
	if again.ResourceVersion != marked.ResourceVersion {
		t.Errorf("repeated Delete changed resourceVersion from %s to %s", marked.ResourceVersion, again.ResourceVersion)
	}
}

func (s *suite) testDeleteRemovesObjectWithoutFinalizers(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "w1")
	mustCreate(t, st, w)
	del := &Widget{ObjectMeta: meta.ObjectMeta{Namespace: "ns1", Name: "w1"}}
	if err := st.Delete(ctx(t), del); err != nil {
		t.Fatal(err)
	}
	if del.UID != w.UID || del.Spec.Size != w.Spec.Size {
		t.Errorf("Delete gave %+v, want the last state %+v", del, w)
	}
	err := st.Get(ctx(t), meta.Key{Namespace: "ns1", Name: "w1"}, &Widget{})
	wantCode(t, "Get after Delete", err, errs.NotFound, "-")
	err = st.Delete(ctx(t), &Widget{ObjectMeta: meta.ObjectMeta{Namespace: "ns1", Name: "w1"}})
	wantCode(t, "second Delete", err, errs.NotFound, "-")
}

func (s *suite) testDeleteMissingIsNotFound(t *testing.T) {
	st := s.newStore(t)
	err := st.Delete(ctx(t), &Widget{ObjectMeta: meta.ObjectMeta{Namespace: "ns1", Name: "nope"}})
	wantCode(t, "Delete of a missing object", err, errs.NotFound, "-")
}

func (s *suite) testDeletePreconditions(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "w1")
	mustCreate(t, st, w)
	key := &Widget{ObjectMeta: meta.ObjectMeta{Namespace: "ns1", Name: "w1"}}
	cases := []struct {
		name  string
		p     store.Preconditions
		field string
	}{
		{"wrong uid", store.Preconditions{UID: "00000000-0000-0000-0000-000000000000"}, "metadata.uid"},
		{"wrong resourceVersion", store.Preconditions{ResourceVersion: w.ResourceVersion + "0"}, "metadata.resourceVersion"},
		{"right uid, wrong resourceVersion", store.Preconditions{UID: w.UID, ResourceVersion: w.ResourceVersion + "0"}, "metadata.resourceVersion"},
	}
	for _, c := range cases {
		err := st.Delete(ctx(t), meta.DeepCopy(key), store.WithPreconditions(c.p))
		wantCode(t, "Delete with "+c.name, err, errs.Conflict, c.field)
		if got := mustGetWidget(t, st, "ns1", "w1"); got.ResourceVersion != w.ResourceVersion {
			t.Fatalf("Delete with %s changed the object: rv %s, want %s", c.name, got.ResourceVersion, w.ResourceVersion)
		}
	}
	if err := st.Delete(ctx(t), key, store.WithPreconditions(store.Preconditions{UID: w.UID, ResourceVersion: w.ResourceVersion})); err != nil {
		t.Fatalf("Delete with matching preconditions: %v", err)
	}
	err := st.Get(ctx(t), meta.Key{Namespace: "ns1", Name: "w1"}, &Widget{})
	wantCode(t, "Get after Delete", err, errs.NotFound, "-")
}

func (s *suite) testDeleteFinalizerFlow(t *testing.T) {
	st := s.newStore(t)
	key := meta.Key{Namespace: "ns1", Name: "w1"}
	res, err := st.List(ctx(t), WidgetKind, store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wa := s.watch(t, st, WidgetKind, store.WatchOptions{Revision: res.Revision})
	w := widget("ns1", "w1")
	w.Finalizers = []string{"example.com/a", "example.com/b"}
	mustCreate(t, st, w)
	wa.expect(store.Added, key)

	// Delete marks the object.
	del := &Widget{ObjectMeta: meta.ObjectMeta{Namespace: "ns1", Name: "w1"}}
	if err := st.Delete(ctx(t), del); err != nil {
		t.Fatal(err)
	}
	if del.DeletionTimestamp == nil || len(del.Finalizers) != 2 {
		t.Fatalf("Delete with finalizers gave %+v, want deletionTimestamp set and finalizers kept", del.ObjectMeta)
	}
	if rvOf(t, del) <= rvOf(t, w) {
		t.Errorf("marking for deletion did not advance resourceVersion: %s after %s", del.ResourceVersion, w.ResourceVersion)
	}
	ev := wa.expect(store.Modified, key)
	if ev.Object.GetObjectMeta().DeletionTimestamp == nil {
		t.Errorf("Modified event after Delete has no deletionTimestamp")
	}
	marked := mustGetWidget(t, st, "ns1", "w1")
	if marked.DeletionTimestamp == nil || !marked.DeletionTimestamp.Equal(*del.DeletionTimestamp) {
		t.Fatalf("Get after Delete: deletionTimestamp %v, want %v", marked.DeletionTimestamp, del.DeletionTimestamp)
	}
	if dt := *marked.DeletionTimestamp; dt.Location() != time.UTC || dt.Nanosecond()%int(time.Millisecond) != 0 || time.Since(dt) > time.Hour || time.Until(dt) > time.Minute {
		t.Errorf("deletionTimestamp %v, want about now, UTC, millisecond precision", dt)
	}

	// Deleting again changes nothing.
	again := &Widget{ObjectMeta: meta.ObjectMeta{Namespace: "ns1", Name: "w1"}}
	if err := st.Delete(ctx(t), again); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	if again.ResourceVersion != marked.ResourceVersion || !again.DeletionTimestamp.Equal(*marked.DeletionTimestamp) {
		t.Errorf("second Delete changed the object: %+v, was %+v", again.ObjectMeta, marked.ObjectMeta)
	}

	// No new finalizers on an object being deleted.
	add := meta.DeepCopy(marked)
	add.Finalizers = append(add.Finalizers, "example.com/c")
	err = st.Update(ctx(t), add)
	wantCode(t, "adding a finalizer while deleting", err, errs.FailedPrecondition, "metadata.finalizers")

	// Updates still work, and keep the deletionTimestamp.
	marked.Finalizers = []string{"example.com/b"}
	marked.Spec.Size = 5
	marked.DeletionTimestamp = nil
	mustUpdate(t, st, marked)
	if marked.DeletionTimestamp == nil {
		t.Errorf("Update cleared deletionTimestamp")
	}
	wa.expect(store.Modified, key)

	// Removing the last finalizer deletes.
	marked.Finalizers = nil
	mustUpdate(t, st, marked)
	ev = wa.expect(store.Deleted, key)
	if _, ok := ev.Object.(*Widget); !ok {
		t.Errorf("Deleted event object is %T, want *Widget", ev.Object)
	}
	err = st.Get(ctx(t), key, &Widget{})
	wantCode(t, "Get after the last finalizer is removed", err, errs.NotFound, "-")
	list, err := st.List(ctx(t), WidgetKind, store.ListOptions{})
	if err != nil || len(list.Items) != 0 {
		t.Errorf("List after deletion = %v, %v; want empty", list, err)
	}
}

func (s *suite) testDeleteRecreateGetsNewUID(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "w1")
	mustCreate(t, st, w)
	if err := st.Delete(ctx(t), meta.DeepCopy(w)); err != nil {
		t.Fatal(err)
	}
	w2 := widget("ns1", "w1")
	mustCreate(t, st, w2)
	if w2.UID == w.UID || w2.Generation != 1 {
		t.Errorf("recreated object has uid %s (old %s) generation %d; want a new uid and generation 1", w2.UID, w.UID, w2.Generation)
	}
	// An update carrying the old incarnation's uid must not hit the new one.
	old := meta.DeepCopy(w)
	old.ResourceVersion = ""
	err := st.Update(ctx(t), old)
	wantCode(t, "Update with the previous incarnation's uid", err, errs.Conflict, "metadata.uid")
}

func (s *suite) testDeleteClusterScopedAndUnstructured(t *testing.T) {
	st := s.newStore(t)
	mustCreate(t, st, &Gizmo{ObjectMeta: meta.ObjectMeta{Name: "g1"}})
	if err := st.Delete(ctx(t), &Gizmo{ObjectMeta: meta.ObjectMeta{Name: "g1"}}); err != nil {
		t.Fatal(err)
	}
	err := st.Get(ctx(t), meta.Key{Name: "g1"}, &Gizmo{})
	wantCode(t, "Get of a deleted cluster-scoped object", err, errs.NotFound, "-")

	mustCreate(t, st, doodad("ns1", "d1"))
	del := &meta.Unstructured{Kind: DoodadKind, ObjectMeta: meta.ObjectMeta{Namespace: "ns1", Name: "d1"}}
	if err := st.Delete(ctx(t), del); err != nil {
		t.Fatal(err)
	}
	if !sameJSON(del.Fields["spec"], doodad("ns1", "d1").Fields["spec"]) {
		t.Errorf("Delete gave fields %v, want the last state", del.Fields)
	}
	err = st.Get(ctx(t), meta.Key{Namespace: "ns1", Name: "d1"}, &meta.Unstructured{Kind: DoodadKind})
	wantCode(t, "Get of a deleted unstructured object", err, errs.NotFound, "-")
}
