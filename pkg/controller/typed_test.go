package controller_test

import (
	"context"
	"testing"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

type unavailableReader struct{ store.Reader }

func (unavailableReader) Get(context.Context, meta.Key, meta.Object) error {
	return errs.New(errs.Unavailable, "down")
}

func TestObjectFunc(t *testing.T) {
	ctx := context.Background()
	st := runtimetest.Memory(t, runtimetest.NewScheme())
	if err := st.Create(ctx, runtimetest.NewWidget("ns", "a", 7)); err != nil {
		t.Fatal(err)
	}
	var got []*runtimetest.Widget
	fn := func(_ context.Context, w *runtimetest.Widget) (controller.Result, error) {
		got = append(got, w)
		w.Spec.Size = 100 // a reconciler may scribble on its copy
		return controller.Result{Requeue: true}, nil
	}
	r := controller.ObjectFunc(st, fn)

	res, err := r.Reconcile(ctx, key("a"))
	if err != nil || !res.Requeue {
		t.Fatalf("Reconcile = %+v, %v; want fn's result", res, err)
	}
	if len(got) != 1 || got[0].Spec.Size != 100 || got[0].UID == "" {
		t.Fatalf("fn got %+v", got)
	}
	if _, err := r.Reconcile(ctx, key("a")); err != nil {
		t.Fatal(err)
	}
	if got[1] == got[0] || got[1].Spec.Size != 100 {
		t.Fatal("fn did not get a fresh object read from the reader")
	}
	var stored runtimetest.Widget
	if err := st.Get(ctx, key("a"), &stored); err != nil || stored.Spec.Size != 7 {
		t.Fatalf("the reconciler's copy changed the store: %+v %v", stored, err)
	}

	res, err = r.Reconcile(ctx, key("gone"))
	if err != nil || !res.IsZero() || len(got) != 2 {
		t.Fatalf("missing object: %+v, %v, %d calls; want a quiet success without calling fn", res, err, len(got))
	}
	if _, err := controller.ObjectFunc(unavailableReader{}, fn).Reconcile(ctx, key("a")); !errs.IsUnavailable(err) || len(got) != 2 {
		t.Fatalf("read error: %v, %d calls; want the reader's error without calling fn", err, len(got))
	}
}
