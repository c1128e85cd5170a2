package memory_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/memory"
	"github.com/capstanhq/capstan/pkg/store/storetest"
)

// benchStore returns a store holding n widgets in namespace "bench".
func benchStore(b *testing.B, n int) *memory.Store {
	b.Helper()
	scheme := store.NewScheme()
	if err := storetest.RegisterKinds(scheme); err != nil {
		b.Fatal(err)
	}
	s := memory.New(scheme)
	b.Cleanup(func() { _ = s.Close(context.Background()) })
	for i := range n {
		if err := s.Create(context.Background(), benchWidget(i)); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

func benchWidget(i int) *storetest.Widget {
	return &storetest.Widget{
		ObjectMeta: meta.ObjectMeta{
			Namespace: "bench", Name: fmt.Sprintf("w%05d", i),
			Labels: map[string]string{"app": "bench", "tier": "web"},
		},
		Spec: storetest.WidgetSpec{Size: i, Color: "red", Tags: []string{"a", "b"}, Nested: map[string]string{"k": "v"}},
		Status: storetest.WidgetStatus{Phase: "Running", Conditions: []meta.Condition{
			{Type: "Ready", Status: meta.ConditionTrue, Reason: "Up", LastTransitionTime: meta.Now()},
		}},
	}
}

func BenchmarkGet(b *testing.B) {
	s := benchStore(b, 1000)
	ctx := context.Background()
	key := meta.Key{Namespace: "bench", Name: "w00500"}
	var w storetest.Widget
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Get(ctx, key, &w); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetParallel(b *testing.B) {
	s := benchStore(b, 1000)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var w storetest.Widget
		i := 0
		for pb.Next() {
			key := meta.Key{Namespace: "bench", Name: fmt.Sprintf("w%05d", i%1000)}
			if err := s.Get(ctx, key, &w); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// BenchmarkUpdate is a compare-and-swap Update of one object, each
// carrying the resourceVersion the previous one returned.
func BenchmarkUpdate(b *testing.B) {
	s := benchStore(b, 1000)
	ctx := context.Background()
	w := &storetest.Widget{}
	if err := s.Get(ctx, meta.Key{Namespace: "bench", Name: "w00500"}, w); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		w.Spec.Size++
		if err := s.Update(ctx, w); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUpdateStatus(b *testing.B) {
	s := benchStore(b, 1000)
	ctx := context.Background()
	w := &storetest.Widget{}
	if err := s.Get(ctx, meta.Key{Namespace: "bench", Name: "w00500"}, w); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		w.Status.Conditions[0].ObservedGeneration++
		if err := s.UpdateStatus(ctx, w); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCreate(b *testing.B) {
	s := benchStore(b, 0)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := s.Create(ctx, benchWidget(i)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkList1000(b *testing.B) {
	s := benchStore(b, 1000)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		res, err := s.List(ctx, storetest.WidgetKind, store.ListOptions{})
		if err != nil || len(res.Items) != 1000 {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpdateWatched is BenchmarkUpdate with a watch consuming every
// change.
func BenchmarkUpdateWatched(b *testing.B) {
	s := benchStore(b, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := s.Watch(ctx, storetest.WidgetKind, store.WatchOptions{})
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for range ch {
		}
	}()
	w := &storetest.Widget{}
	if err := s.Get(ctx, meta.Key{Namespace: "bench", Name: "w00500"}, w); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		w.Spec.Size++
		if err := s.Update(ctx, w); err != nil {
			b.Fatal(err)
		}
	}
}
