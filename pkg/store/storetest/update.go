package storetest

import (
	"fmt"
	"sync"
	"testing"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
)

func (s *suite) updateTests() []test {
	return []test{
		{"WritesSpecAndMetadata", s.testUpdateWritesSpecAndMetadata},
		{"StaleVersionConflicts", s.testUpdateStaleVersionConflicts},
		{"MissingIsNotFound", s.testUpdateMissingIsNotFound},
		{"EmptyVersionIsUnconditional", s.testUpdateEmptyVersionIsUnconditional},
		{"ResourceVersionStrictlyIncreases", s.testUpdateResourceVersionStrictlyIncreases},
		{"GenerationBumpsOnlyOnSpecChange", s.testUpdateGenerationBumpsOnlyOnSpecChange},
		{"NeverWritesStatus", s.testUpdateNeverWritesStatus},
		{"KeepsStoreOwnedFields", s.testUpdateKeepsStoreOwnedFields},
		{"ForeignUIDConflicts", s.testUpdateForeignUIDConflicts},
		{"InputIsNotShared", s.testUpdateInputIsNotShared},
		{"Unstructured", s.testUpdateUnstructured},
		{"ConcurrentCASExactlyOneWins", s.testUpdateConcurrentCASExactlyOneWins},
		{"ConcurrentCounterIsExact", s.testUpdateConcurrentCounterIsExact},
		{"ConcurrentUnconditionalUpdatesAllApply", s.testUpdateConcurrentUnconditional},
	}
}

func (s *suite) testUpdateConcurrentUnconditional(t *testing.T) {
	st := s.newStore(t)
	mustCreate(t, st, widget("ns1", "w1"))
	const n = 8
	type result struct {
		size int
		rv   string
		err  error
	}
	results := make(chan result, n)
	for i := range n {
		go func() {
			w := widget("ns1", "w1")
			w.Spec.Size = 100 + i
			err := st.Update(ctx(t), w)
			results <- result{w.Spec.Size, w.ResourceVersion, err}
		}()
	}
	rvs := map[string]int{}
	var newest result
	for range n {
		r := <-results
		if r.err != nil {
			t.Fatalf("unconditional Update: %v", r.err)
		}
		if _, dup := rvs[r.rv]; dup {
			t.Errorf("two Updates returned resourceVersion %s", r.rv)
		}
		rvs[r.rv] = r.size
		if newest.rv == "" || rvOf(t, &Widget{ObjectMeta: meta.ObjectMeta{ResourceVersion: r.rv}}) > rvOf(t, &Widget{ObjectMeta: meta.ObjectMeta{ResourceVersion: newest.rv}}) {
			newest = r
		}
	}
	got := mustGetWidget(t, st, "ns1", "w1")
	if got.ResourceVersion != newest.rv || got.Spec.Size != newest.size {
		t.Errorf("stored rv %s size %d, want the newest write's %s %d", got.ResourceVersion, got.Spec.Size, newest.rv, newest.size)
	}
	if got.Generation != 1+n {
		t.Errorf("generation %d after %d spec changes, want %d", got.Generation, n, 1+n)
	}
}

func (s *suite) updateStatusTests() []test {
	return []test{
		{"WritesOnlyStatus", s.testUpdateStatusWritesOnlyStatus},
		{"StaleVersionConflicts", s.testUpdateStatusStaleVersionConflicts},
		{"MissingIsNotFound", s.testUpdateStatusMissingIsNotFound},
		{"Unstructured", s.testUpdateStatusUnstructured},
	}
}

func (s *suite) testUpdateWritesSpecAndMetadata(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "w1")
	mustCreate(t, st, w)
	w.Spec.Color = "blue"
	w.Spec.Tags = append(w.Spec.Tags, "c")
	w.Labels["tier"] = "x"
	w.Annotations = map[string]string{"note": "hello"}
	w.Finalizers = []string{"example.com/f"}
	w.OwnerReferences = []meta.OwnerReference{{Kind: "Gizmo", Name: "g", UID: "u1", Controller: true}}
	mustUpdate(t, st, w)
	got := mustGetWidget(t, st, "ns1", "w1")
	if !sameWidget(got, w) {
		t.Errorf("Get after Update = %+v, want %+v", got, w)
	}
}

func (s *suite) testUpdateStaleVersionConflicts(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "w1")
	mustCreate(t, st, w)
	stale := mustGetWidget(t, st, "ns1", "w1")
	w.Spec.Size = 2
	mustUpdate(t, st, w)
	want := frozenWidget(t, st, "ns1", "w1")
	stale.Spec.Size = 3
	err := st.Update(ctx(t), stale)
	wantCode(t, "Update with a stale resourceVersion", err, errs.Conflict, "metadata.resourceVersion")
	if got := mustGetWidget(t, st, "ns1", "w1"); !sameWidget(got, want) {
		t.Errorf("conflicting Update changed the object: got %+v, want %+v", got, want)
	}
}

func (s *suite) testUpdateMissingIsNotFound(t *testing.T) {
	st := s.newStore(t)
	for _, rv := range []string{"", "1"} {
		w := widget("ns1", "nope")
		w.ResourceVersion = rv
		err := st.Update(ctx(t), w)
		wantCode(t, fmt.Sprintf("Update of a missing object (rv %q)", rv), err, errs.NotFound, "-")
	}
	err := st.Get(ctx(t), meta.Key{Namespace: "ns1", Name: "nope"}, &Widget{})
	wantCode(t, "Get after Update of a missing object", err, errs.NotFound, "-")
}

func (s *suite) testUpdateEmptyVersionIsUnconditional(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "w1")
	mustCreate(t, st, w)
	w2 := mustGetWidget(t, st, "ns1", "w1")
	w2.Spec.Size = 2
	mustUpdate(t, st, w2)
	w.ResourceVersion = ""
	w.Spec.Size = 5
	mustUpdate(t, st, w)
	if got := mustGetWidget(t, st, "ns1", "w1"); got.Spec.Size != 5 || got.ResourceVersion != w.ResourceVersion {
		t.Errorf("after an unconditional Update: size %d rv %s, want 5 and %s", got.Spec.Size, got.ResourceVersion, w.ResourceVersion)
	}
}

func (s *suite) testUpdateResourceVersionStrictlyIncreases(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "w1")
	mustCreate(t, st, w)
	last := rvOf(t, w)
	for i := range 6 {
		switch i % 3 {
		case 0: // no change at all
			mustUpdate(t, st, w)
		case 1:
			w.Spec.Size++
			mustUpdate(t, st, w)
		case 2:
			w.Status.Phase = fmt.Sprint("phase", i)
			if err := st.UpdateStatus(ctx(t), w); err != nil {
				t.Fatal(err)
			}
		}
		rv := rvOf(t, w)
		if rv <= last {
			t.Fatalf("write %d: resourceVersion %d after %d, want it to increase", i, rv, last)
		}
		last = rv
		if got := mustGetWidget(t, st, "ns1", "w1"); got.ResourceVersion != w.ResourceVersion {
			t.Fatalf("write %d returned resourceVersion %s, Get says %s", i, w.ResourceVersion, got.ResourceVersion)
		}
	}
}

func (s *suite) testUpdateGenerationBumpsOnlyOnSpecChange(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "w1")
	mustCreate(t, st, w)
	steps := []struct {
		what   string
		change func(*Widget)
		want   int64
	}{
		{"no change", func(*Widget) {}, 1},
		{"labels", func(w *Widget) { w.Labels["x"] = "y" }, 1},
		{"annotations", func(w *Widget) { w.Annotations = map[string]string{"a": "b"} }, 1},
		{"status in Update", func(w *Widget) { w.Status.Phase = "ignored" }, 1},
		{"spec size", func(w *Widget) { w.Spec.Size = 10 }, 2},
		{"spec slice", func(w *Widget) { w.Spec.Tags = append(w.Spec.Tags, "z") }, 3},
		{"spec map", func(w *Widget) { w.Spec.Nested["k"] = "other" }, 4},
		{"generation set by the client", func(w *Widget) { w.Generation = 100 }, 4},
	}
	for _, step := range steps {
		step.change(w)
		mustUpdate(t, st, w)
		if w.Generation != step.want {
			t.Errorf("after %s: generation %d, want %d", step.what, w.Generation, step.want)
		}
		if got := mustGetWidget(t, st, "ns1", "w1"); got.Generation != step.want {
			t.Errorf("after %s: stored generation %d, want %d", step.what, got.Generation, step.want)
		}
	}
	w.Status.Phase = "Running"
	if err := st.UpdateStatus(ctx(t), w); err != nil {
		t.Fatal(err)
	}
	if w.Generation != 4 {
		t.Errorf("after UpdateStatus: generation %d, want 4", w.Generation)
	}
}

func (s *suite) testUpdateNeverWritesStatus(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "w1")
	mustCreate(t, st, w)
	w.Status.Phase = "Running"
	if err := st.UpdateStatus(ctx(t), w); err != nil {
		t.Fatal(err)
	}
	w.Status = WidgetStatus{Phase: "Hacked", Conditions: []meta.Condition{{Type: "Ready", Status: meta.ConditionTrue}}}
	w.Spec.Size = 7
	mustUpdate(t, st, w)
	if w.Status.Phase != "Running" || len(w.Status.Conditions) != 0 {
		t.Errorf("Update returned status %+v, want the stored one (Running)", w.Status)
	}
	got := mustGetWidget(t, st, "ns1", "w1")
	if got.Status.Phase != "Running" || len(got.Status.Conditions) != 0 || got.Spec.Size != 7 {
		t.Errorf("after Update: status %+v size %d, want status Running and size 7", got.Status, got.Spec.Size)
	}
}

func (s *suite) testUpdateKeepsStoreOwnedFields(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "w1")
	mustCreate(t, st, w)
	orig := mustGetWidget(t, st, "ns1", "w1")
	w.CreationTimestamp = orig.CreationTimestamp.AddDate(-1, 0, 0)
	w.Generation = 50
	now := meta.Now()
	w.DeletionTimestamp = &now
	w.Fences = map[string]int64{"Lock/ns1/l": 7}
	mustUpdate(t, st, w)
	got := mustGetWidget(t, st, "ns1", "w1")
	if got.UID != orig.UID || !got.CreationTimestamp.Equal(orig.CreationTimestamp) || got.Generation != 1 ||
		got.DeletionTimestamp != nil || len(got.Fences) != 0 {
		t.Errorf("Update changed store-owned fields: got %+v, want uid %s created %v generation 1, no deletionTimestamp or fences",
			got.ObjectMeta, orig.UID, orig.CreationTimestamp)
	}
	if !sameJSON(w.ObjectMeta, got.ObjectMeta) {
		t.Errorf("Update returned metadata %+v, the store holds %+v", w.ObjectMeta, got.ObjectMeta)
	}
}

func (s *suite) testUpdateForeignUIDConflicts(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "w1")
	mustCreate(t, st, w)
	want := frozenWidget(t, st, "ns1", "w1")
	w.UID = "00000000-0000-0000-0000-000000000000"
	w.Spec.Size = 9
	err := st.Update(ctx(t), w)
	wantCode(t, "Update with another uid", err, errs.Conflict, "metadata.uid")
	err = st.UpdateStatus(ctx(t), w)
	wantCode(t, "UpdateStatus with another uid", err, errs.Conflict, "metadata.uid")
	if got := mustGetWidget(t, st, "ns1", "w1"); !sameWidget(got, want) {
		t.Errorf("rejected Update changed the object: got %+v, want %+v", got, want)
	}
}

func (s *suite) testUpdateInputIsNotShared(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "w1")
	mustCreate(t, st, w)
	w.Spec.Tags = []string{"x"}
	tags := w.Spec.Tags
	mustUpdate(t, st, w)
	want := frozenWidget(t, st, "ns1", "w1")
	tags[0] = "changed"
	w.Spec.Nested["k"] = "changed"
	w.Labels["app"] = "changed"
	if got := mustGetWidget(t, st, "ns1", "w1"); !sameWidget(got, want) {
		t.Errorf("mutating Update's input or result changed the store: got %+v, want %+v", got, want)
	}
}

func (s *suite) testUpdateUnstructured(t *testing.T) {
	st := s.newStore(t)
	u := doodad("ns1", "d1")
	mustCreate(t, st, u)
	u.SetField("spec", map[string]any{"size": 2})
	u.SetField("status", map[string]any{"phase": "ignored"})
	u.SetField("other", []any{"kept"})
	mustUpdate(t, st, u)
	if u.Generation != 2 {
		t.Errorf("generation after a spec change = %d, want 2", u.Generation)
	}
	got := &meta.Unstructured{Kind: DoodadKind}
	if err := st.Get(ctx(t), meta.Key{Namespace: "ns1", Name: "d1"}, got); err != nil {
		t.Fatal(err)
	}
	if !sameJSON(got.Fields["spec"], map[string]any{"size": 2}) || !sameJSON(got.Fields["other"], []any{"kept"}) {
		t.Errorf("after Update: fields %v", got.Fields)
	}
	if _, ok := got.Fields["status"]; ok {
		t.Errorf("Update wrote status: %v", got.Fields["status"])
	}
	got.SetField("other", "dropped")
	mustUpdate(t, st, got) // labels/other fields only: generation stays
	if got.Generation != 2 {
		t.Errorf("generation after a non-spec change = %d, want 2", got.Generation)
	}
}

func (s *suite) testUpdateConcurrentCASExactlyOneWins(t *testing.T) {
	st := s.newStore(t)
	mustCreate(t, st, widget("ns1", "w1"))
	base := mustGetWidget(t, st, "ns1", "w1")
	const n = 8
	type result struct {
		size int
		rv   string
		err  error
	}
	results := make(chan result, n)
	var start sync.WaitGroup
	start.Add(1)
	for i := range n {
		w := meta.DeepCopy(base)
		w.Spec.Size = 100 + i
		go func() {
			start.Wait()
			err := st.Update(ctx(t), w)
			results <- result{w.Spec.Size, w.ResourceVersion, err}
		}()
	}
	start.Done()
	var winner *result
	for range n {
		r := <-results
		switch {
		case r.err == nil:
			if winner != nil {
				t.Errorf("two Updates from resourceVersion %s won (sizes %d and %d)", base.ResourceVersion, winner.size, r.size)
			}
			winner = &r
		case errs.IsConflict(r.err):
			if f := errs.FieldOf(r.err); f != "metadata.resourceVersion" {
				t.Errorf("conflict names field %q, want metadata.resourceVersion", f)
			}
		default:
			t.Errorf("concurrent Update: %v", r.err)
		}
	}
	if winner == nil {
		t.Fatal("no Update won")
	}
	got := mustGetWidget(t, st, "ns1", "w1")
	if got.Spec.Size != winner.size || got.ResourceVersion != winner.rv {
		t.Errorf("stored size %d rv %s, want the winner's %d %s", got.Spec.Size, got.ResourceVersion, winner.size, winner.rv)
	}
}

func (s *suite) testUpdateConcurrentCounterIsExact(t *testing.T) {
	st := s.newStore(t)
	mustCreate(t, st, widget("ns1", "counter"))
	const workers, increments = 4, 25
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range increments {
				for {
					w := &Widget{}
					if err := st.Get(ctx(t), meta.Key{Namespace: "ns1", Name: "counter"}, w); err != nil {
						errc <- err
						return
					}
					w.Spec.Size++
					err := st.Update(ctx(t), w)
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
		t.Fatalf("counter worker: %v", err)
	}
	got := mustGetWidget(t, st, "ns1", "counter")
	if want := 1 + workers*increments; got.Spec.Size != want {
		t.Errorf("counter = %d, want %d", got.Spec.Size, want)
	}
	if got.Generation != 1+workers*increments {
		t.Errorf("generation = %d, want %d (one per spec change)", got.Generation, 1+workers*increments)
	}
}

func (s *suite) testUpdateStatusWritesOnlyStatus(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "w1")
	mustCreate(t, st, w)
	orig := mustGetWidget(t, st, "ns1", "w1")
	w.Spec.Size = 42
	w.Labels["app"] = "changed"
	w.Annotations = map[string]string{"a": "b"}
	w.Finalizers = []string{"example.com/f"}
	w.Status = WidgetStatus{Phase: "Running", Conditions: []meta.Condition{{
		Type: "Ready", Status: meta.ConditionTrue, Reason: "Up", LastTransitionTime: meta.Now(), ObservedGeneration: 1,
	}}}
	if err := st.UpdateStatus(ctx(t), w); err != nil {
		t.Fatal(err)
	}
	want := meta.DeepCopy(orig)
	want.Status = w.Status
	want.ResourceVersion = w.ResourceVersion
	got := mustGetWidget(t, st, "ns1", "w1")
	if !sameWidget(got, want) {
		t.Errorf("after UpdateStatus = %+v, want only the status changed: %+v", got, want)
	}
	if !sameWidget(w, want) {
		t.Errorf("UpdateStatus returned %+v, want the stored object %+v", w, want)
	}
}

func (s *suite) testUpdateStatusStaleVersionConflicts(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "w1")
	mustCreate(t, st, w)
	stale := meta.DeepCopy(w)
	w.Spec.Size = 2
	mustUpdate(t, st, w)
	want := frozenWidget(t, st, "ns1", "w1")
	stale.Status.Phase = "Stale"
	err := st.UpdateStatus(ctx(t), stale)
	wantCode(t, "UpdateStatus with a stale resourceVersion", err, errs.Conflict, "metadata.resourceVersion")
	if got := mustGetWidget(t, st, "ns1", "w1"); !sameWidget(got, want) {
		t.Errorf("conflicting UpdateStatus changed the object: got %+v, want %+v", got, want)
	}
	stale.ResourceVersion = ""
	if err := st.UpdateStatus(ctx(t), stale); err != nil {
		t.Errorf("unconditional UpdateStatus: %v", err)
	}
	if got := mustGetWidget(t, st, "ns1", "w1"); got.Status.Phase != "Stale" || got.Spec.Size != 2 {
		t.Errorf("after an unconditional UpdateStatus: phase %q size %d, want Stale and 2", got.Status.Phase, got.Spec.Size)
	}
}

func (s *suite) testUpdateStatusMissingIsNotFound(t *testing.T) {
	st := s.newStore(t)
	w := widget("ns1", "nope")
	w.Status.Phase = "x"
	err := st.UpdateStatus(ctx(t), w)
	wantCode(t, "UpdateStatus of a missing object", err, errs.NotFound, "-")
	err = st.Get(ctx(t), meta.Key{Namespace: "ns1", Name: "nope"}, &Widget{})
	wantCode(t, "Get after UpdateStatus of a missing object", err, errs.NotFound, "-")
}

func (s *suite) testUpdateStatusUnstructured(t *testing.T) {
	st := s.newStore(t)
	u := doodad("ns1", "d1")
	mustCreate(t, st, u)
	u.SetField("status", map[string]any{"phase": "Running"})
	u.SetField("spec", map[string]any{"size": 99})
	if err := st.UpdateStatus(ctx(t), u); err != nil {
		t.Fatal(err)
	}
	got := &meta.Unstructured{Kind: DoodadKind}
	if err := st.Get(ctx(t), meta.Key{Namespace: "ns1", Name: "d1"}, got); err != nil {
		t.Fatal(err)
	}
	if !sameJSON(got.Fields["status"], map[string]any{"phase": "Running"}) {
		t.Errorf("status = %v, want phase Running", got.Fields["status"])
	}
	if !sameJSON(got.Fields["spec"], doodad("ns1", "d1").Fields["spec"]) || got.Generation != 1 {
		t.Errorf("UpdateStatus changed spec or generation: spec %v generation %d", got.Fields["spec"], got.Generation)
	}
}
