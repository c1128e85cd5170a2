package controllerutil_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/controller/controllerutil"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

func TestFinalizers(t *testing.T) {
	w := runtimetest.NewWidget("ns", "a", 0)
	if controllerutil.RemoveFinalizer(w, "x") {
		t.Fatal("removed a finalizer that was not there")
	}
	if !controllerutil.AddFinalizer(w, "x") || !controllerutil.AddFinalizer(w, "y") || !controllerutil.AddFinalizer(w, "z") {
		t.Fatal("AddFinalizer reported a new finalizer as present")
	}
	if controllerutil.AddFinalizer(w, "y") {
		t.Fatal("AddFinalizer added y twice")
	}
	if !slices.Equal(w.Finalizers, []string{"x", "y", "z"}) {
		t.Fatalf("finalizers %q", w.Finalizers)
	}
	if !controllerutil.RemoveFinalizer(w, "y") || controllerutil.RemoveFinalizer(w, "y") {
		t.Fatal("RemoveFinalizer of y is wrong")
	}
	if !slices.Equal(w.Finalizers, []string{"x", "z"}) {
		t.Fatalf("finalizers %q after removing y", w.Finalizers)
	}
	controllerutil.RemoveFinalizer(w, "x")
	controllerutil.RemoveFinalizer(w, "z")
	if len(w.Finalizers) != 0 {
		t.Fatalf("finalizers %q after removing all", w.Finalizers)
	}
}

// The finalizer helpers drive the store's deletion flow.
func TestFinalizerFlowThroughTheStore(t *testing.T) {
	ctx := context.Background()
	st := runtimetest.Memory(t, runtimetest.NewScheme())
	w := runtimetest.NewWidget("ns", "a", 0)
	controllerutil.AddFinalizer(w, "example.com/cleanup")
	if err := st.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, runtimetest.NewWidget("ns", "a", 0)); err != nil {
		t.Fatal(err)
	}
	var got runtimetest.Widget
	if err := st.Get(ctx, meta.KeyOf(w), &got); err != nil || !got.IsBeingDeleted() {
		t.Fatalf("after delete: %v, being deleted %v", err, got.IsBeingDeleted())
	}
	if controllerutil.AddFinalizer(&got, "late") {
		if err := st.Update(ctx, &got); !errs.IsFailedPrecondition(err) {
			t.Fatalf("adding a finalizer while deleting: %v, want FailedPrecondition", err)
		}
	}
	if err := st.Get(ctx, meta.KeyOf(w), &got); err != nil {
		t.Fatal(err)
	}
	controllerutil.RemoveFinalizer(&got, "example.com/cleanup")
	if err := st.Update(ctx, &got); err != nil {
		t.Fatal(err)
	}
	if err := st.Get(ctx, meta.KeyOf(w), &got); !errs.IsNotFound(err) {
		t.Fatalf("after the last finalizer: %v, want NotFound", err)
	}
}

func stored[T any, PT interface {
	*T
	meta.Object
}](t *testing.T, st store.Writer, obj PT) PT {
	t.Helper()
	if err := st.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	return obj
}

func TestOwnerReferences(t *testing.T) {
	scheme := runtimetest.NewScheme()
	st := runtimetest.Memory(t, scheme)
	owner := stored(t, st, runtimetest.NewWidget("ns", "owner", 0))
	other := stored(t, st, runtimetest.NewWidget("ns", "other", 0))
	rack := stored(t, st, &runtimetest.Rack{ObjectMeta: meta.ObjectMeta{Name: "rack"}})
	elsewhere := stored(t, st, runtimetest.NewWidget("ns2", "owner", 0))

	dep := runtimetest.NewGadget("ns", "dep")
	if err := controllerutil.SetControllerReference(owner, dep, scheme); err != nil {
		t.Fatal(err)
	}
	if err := controllerutil.SetControllerReference(owner, dep, scheme); err != nil {
		t.Fatalf("setting the same controller again: %v", err)
	}
	want := meta.OwnerReference{Kind: "Widget", Name: "owner", UID: owner.UID, Controller: true, BlockOwnerDeletion: true}
	if len(dep.OwnerReferences) != 1 || dep.OwnerReferences[0] != want {
		t.Fatalf("owner references %+v, want [%+v]", dep.OwnerReferences, want)
	}
	if err := controllerutil.SetControllerReference(other, dep, scheme); !errs.IsAlreadyExists(err) {
		t.Fatalf("a second controller: %v, want AlreadyExists", err)
	}
	// The same owner re-created (a new uid) is another object.
	reborn := *owner
	reborn.UID = "new-uid"
	if err := controllerutil.SetControllerReference(&reborn, dep, scheme); !errs.IsAlreadyExists(err) {
		t.Fatalf("a re-created owner as controller: %v, want AlreadyExists", err)
	}
	if err := controllerutil.SetOwnerReference(other, dep, scheme); err != nil {
		t.Fatal(err)
	}
	if err := controllerutil.SetOwnerReference(rack, dep, scheme); err != nil {
		t.Fatalf("a cluster-scoped owner of a namespaced object: %v", err)
	}
	if len(dep.OwnerReferences) != 3 || dep.OwnerReferences[1].Controller || dep.OwnerReferences[2].Kind != "Rack" {
		t.Fatalf("owner references %+v", dep.OwnerReferences)
	}
	if c := dep.ControllerRef(); c == nil || c.Name != "owner" {
		t.Fatalf("controller ref %+v", c)
	}

	for _, c := range []struct {
		name       string
		owner, obj meta.Object
		field      string
	}{
		{"owner without uid", runtimetest.NewWidget("ns", "unsaved", 0), runtimetest.NewGadget("ns", "d"), "owner.metadata.uid"},
		{"owner in another namespace", elsewhere, runtimetest.NewGadget("ns", "d"), "metadata.ownerReferences"},
		{"namespaced owner of a cluster-scoped object", owner, &runtimetest.Rack{ObjectMeta: meta.ObjectMeta{Name: "r2"}}, "metadata.ownerReferences"},
		{"owner of an unregistered type", &struct{ meta.ObjectMeta }{meta.ObjectMeta{Name: "x", UID: "u"}}, runtimetest.NewGadget("ns", "d"), "kind"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(c.obj.GetObjectMeta().OwnerReferences)
			for _, set := range []func(meta.Object, meta.Object, *store.Scheme) error{controllerutil.SetControllerReference, controllerutil.SetOwnerReference} {
				err := set(c.owner, c.obj, scheme)
				if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != c.field {
					t.Fatalf("got %v (field %q), want InvalidArgument on %s", err, errs.FieldOf(err), c.field)
				}
			}
			if len(c.obj.GetObjectMeta().OwnerReferences) != before {
				t.Fatal("a failed call changed the owner references")
			}
		})
	}
}

func TestCreateOrUpdate(t *testing.T) {
	ctx := context.Background()
	st := runtimetest.Memory(t, runtimetest.NewScheme())

	w := runtimetest.NewWidget("ns", "a", 0)
	res, err := controllerutil.CreateOrUpdate(ctx, st, w, func() error {
		w.Spec.Size = 3
		return nil
	})
	if err != nil || res != controllerutil.OperationResultCreated || w.UID == "" || w.Spec.Size != 3 {
		t.Fatalf("first call: %v, %v, %+v", res, err, w)
	}
	rv := w.ResourceVersion

	w = runtimetest.NewWidget("ns", "a", 0)
	res, err = controllerutil.CreateOrUpdate(ctx, st, w, func() error {
		w.Spec.Size = 3 // already so
		return nil
	})
	if err != nil || res != controllerutil.OperationResultNone || w.ResourceVersion != rv {
		t.Fatalf("no-op call: %v, %v, resourceVersion %s (was %s)", res, err, w.ResourceVersion, rv)
	}

	res, err = controllerutil.CreateOrUpdate(ctx, st, w, func() error {
		w.Spec.Size = 4
		return nil
	})
	if err != nil || res != controllerutil.OperationResultUpdated || w.ResourceVersion == rv {
		t.Fatalf("update: %v, %v, %+v", res, err, w)
	}
	var got runtimetest.Widget
	if err := st.Get(ctx, meta.KeyOf(w), &got); err != nil || got.Spec.Size != 4 || got.Generation != 2 {
		t.Fatalf("stored %+v, %v", got, err)
	}

	boom := errors.New("boom")
	for _, name := range []string{"a", "new"} {
		x := runtimetest.NewWidget("ns", name, 0)
		if _, err := controllerutil.CreateOrUpdate(ctx, st, x, func() error { x.Spec.Size = 99; return boom }); !errors.Is(err, boom) {
			t.Fatalf("mutate error on %s: %v", name, err)
		}
		x = runtimetest.NewWidget("ns", name, 0)
		if _, err := controllerutil.CreateOrUpdate(ctx, st, x, func() error { x.Name = "renamed"; return nil }); !errs.IsInvalidArgument(err) {
			t.Fatalf("key change on %s: %v, want InvalidArgument", name, err)
		}
	}
	if err := st.Get(ctx, meta.Key{Namespace: "ns", Name: "a"}, &got); err != nil || got.Spec.Size != 4 {
		t.Fatalf("a failed mutate wrote: %+v", got)
	}
	for _, n := range []string{"new", "renamed"} {
		if err := st.Get(ctx, meta.Key{Namespace: "ns", Name: n}, &got); !errs.IsNotFound(err) {
			t.Fatalf("a failed mutate created %s: %v", n, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := controllerutil.CreateOrUpdate(cctx, st, runtimetest.NewWidget("ns", "a", 0), func() error { return nil }); err == nil {
		t.Fatal("CreateOrUpdate with a cancelled context succeeded")
	}
}

// Writers racing on one object that does not exist yet all get through,
// and no update is lost or applied twice. Under heavy contention
// CreateOrUpdate may give up with a Conflict after its retries; the writer
// then tries again, as a controller's requeue would.
func TestCreateOrUpdateConvergesUnderConflicts(t *testing.T) {
	testConverges(t, runtimetest.Memory(t, runtimetest.NewScheme()), 8, 10)
}

func testConverges(t *testing.T, st store.Store, writers, each int) {
	ctx := context.Background()
	var wg sync.WaitGroup
	errc := make(chan error, writers*each)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				tag := fmt.Sprintf("%d-%d", i, j)
				for attempt := 1; ; attempt++ {
					w := runtimetest.NewWidget("ns", "contended", 0)
					_, err := controllerutil.CreateOrUpdate(ctx, st, w, func() error {
						w.Spec.Size++
						w.Spec.Tags = append(w.Spec.Tags, tag)
						return nil
					})
					if err == nil {
						break
					}
					if !errs.IsConflict(err) || attempt == 20 {
						errc <- fmt.Errorf("writer %s, attempt %d: %w", tag, attempt, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Errorf("a writer failed: %v", err)
	}
	var got runtimetest.Widget
	if err := st.Get(ctx, meta.Key{Namespace: "ns", Name: "contended"}, &got); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, tag := range got.Spec.Tags {
		seen[tag]++
	}
	for i := range writers {
		for j := range each {
			if n := seen[fmt.Sprintf("%d-%d", i, j)]; n != 1 {
				t.Errorf("update %d-%d applied %d times", i, j, n)
			}
		}
	}
	if got.Spec.Size != writers*each {
		t.Fatalf("size %d, want %d: updates were lost", got.Spec.Size, writers*each)
	}
}
