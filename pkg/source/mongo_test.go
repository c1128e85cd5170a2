package source_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
	"github.com/capstanhq/capstan/pkg/store"
)

// TestInformerOverMongo follows a Mongo store, whose oplog deletes carry
// only keys: deletes are reported once with the last cached state,
// re-created objects as a delete and an add, and the cache ends equal to
// the store.
func TestInformerOverMongo(t *testing.T) {
	runtimetest.MongoBackend.CheckLeaks(t)
	st := runtimetest.Mongo(t, runtimetest.NewScheme())
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c"} {
		mustCreate(t, st, runtimetest.NewWidget("ns", n, 1))
	}
	inf := source.NewInformer(st, runtimetest.WidgetKind, fastRetry)
	var mu sync.Mutex
	adds, deletes := map[string]int{}, map[string]int{}
	var bad []string
	inf.AddEventHandler(source.HandlerFuncs{
		AddFunc: func(obj meta.Object, _ bool) {
			mu.Lock()
			defer mu.Unlock()
			adds[obj.GetObjectMeta().UID]++
		},
		DeleteFunc: func(obj meta.Object) {
			mu.Lock()
			defer mu.Unlock()
			w := obj.(*runtimetest.Widget)
			deletes[w.UID]++
			if w.UID == "" || w.Spec.Size == 0 || w.ResourceVersion == "" {
				bad = append(bad, fmt.Sprintf("%+v", w))
			}
		},
	})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- inf.Run(rctx) }()
	defer func() { cancel(); runtimetest.Recv(t, done, "Run to return") }()
	if !inf.WaitForSync(ctx) {
		t.Fatal("no sync")
	}
	uid := func(name string) string {
		var w runtimetest.Widget
		if err := st.Get(ctx, meta.Key{Namespace: "ns", Name: name}, &w); err != nil {
			t.Fatal(err)
		}
		return w.UID
	}
	keptA, goneB, oldC := uid("a"), uid("b"), uid("c")
	for i := range 5 {
		var w runtimetest.Widget
		if err := st.Get(ctx, meta.Key{Namespace: "ns", Name: "a"}, &w); err != nil {
			t.Fatal(err)
		}
		w.Spec.Size = 10 + i
		if err := st.Update(ctx, &w); err != nil {
			t.Fatal(err)
		}
	}
	mustDelete := func(name string) {
		if err := st.Delete(ctx, runtimetest.NewWidget("ns", name, 0)); err != nil {
			t.Fatal(err)
		}
	}
	mustDelete("b")
	mustDelete("c")
	mustCreate(t, st, runtimetest.NewWidget("ns", "c", 2), runtimetest.NewWidget("ns", "d", 3))
	newC, oldD := uid("c"), uid("d")
	mustDelete("d")

	runtimetest.Eventually(t, "the cache to match the store", func() (bool, string) {
		res, err := st.List(ctx, runtimetest.WidgetKind, store.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		want := map[meta.Key]string{}
		for _, o := range res.Items {
			want[meta.KeyOf(o)] = o.GetObjectMeta().ResourceVersion
		}
		got := map[meta.Key]string{}
		for _, o := range inf.List("", nil) {
			got[meta.KeyOf(o)] = o.GetObjectMeta().ResourceVersion
		}
		return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprintf("cache %v, store %v", got, want)
	})
	runtimetest.Eventually(t, "d's delete", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return deletes[oldD] == 1, fmt.Sprint(deletes)
	})
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("deletes without the last state: %q", bad)
	}
	for what, c := range map[string][2]int{
		"a (kept)":       {adds[keptA], deletes[keptA]},
		"b (deleted)":    {adds[goneB], deletes[goneB]},
		"old c":          {adds[oldC], deletes[oldC]},
		"new c":          {adds[newC], deletes[newC]},
		"d (came, went)": {adds[oldD], deletes[oldD]},
	} {
		want := map[string][2]int{"a (kept)": {1, 0}, "b (deleted)": {1, 1}, "old c": {1, 1}, "new c": {1, 0}, "d (came, went)": {1, 1}}[what]
		if c != want {
			t.Errorf("%s: %d adds and %d deletes, want %d and %d", what, c[0], c[1], want[0], want[1])
		}
	}
}
