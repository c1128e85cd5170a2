package handler_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/controller/handler"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
)

// recQueue records every Add, duplicates included; other queue methods
// are not used by handlers.
type recQueue struct {
	source.Queue
	mu   sync.Mutex
	adds []string
}

func (q *recQueue) Add(k meta.Key) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.adds = append(q.adds, k.String())
}

func (q *recQueue) take() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.adds
	q.adds = nil
	slices.Sort(out)
	return out
}

func widget(ns, name string, owners ...meta.OwnerReference) *runtimetest.Widget {
	w := runtimetest.NewWidget(ns, name, 0)
	w.OwnerReferences = owners
	return w
}

func owner(kind, name string, controller bool) meta.OwnerReference {
	return meta.OwnerReference{Kind: kind, Name: name, UID: "uid-" + name, Controller: controller}
}

type call func(ctx context.Context, h source.EventHandler, q source.Queue)

func create(obj meta.Object) call {
	return func(ctx context.Context, h source.EventHandler, q source.Queue) {
		h.Create(ctx, source.CreateEvent{Object: obj}, q)
	}
}

func update(o, n meta.Object) call {
	return func(ctx context.Context, h source.EventHandler, q source.Queue) {
		h.Update(ctx, source.UpdateEvent{ObjectOld: o, ObjectNew: n}, q)
	}
}

func del(obj meta.Object) call {
	return func(ctx context.Context, h source.EventHandler, q source.Queue) {
		h.Delete(ctx, source.DeleteEvent{Object: obj}, q)
	}
}

func generic(obj meta.Object) call {
	return func(ctx context.Context, h source.EventHandler, q source.Queue) {
		h.Generic(ctx, source.GenericEvent{Object: obj}, q)
	}
}

func TestHandlers(t *testing.T) {
	a, a2, b := widget("ns", "a"), widget("ns", "a"), widget("ns", "b")
	a2.Spec.Size = 2
	owned := widget("ns", "dep", owner("Widget", "w1", true), owner("Widget", "w2", false), owner("Gadget", "g1", false))
	ownedLater := widget("ns", "dep", owner("Widget", "w3", true), owner("Widget", "w2", false))
	orphan := widget("ns", "orphan")
	clusterOwned := widget("ns", "dep", owner("Rack", "r1", true))

	byLabel := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, obj meta.Object) []handler.Request {
		var out []handler.Request
		for _, n := range []string{"x", "y"} {
			if v, ok := obj.GetObjectMeta().Labels[n]; ok {
				out = append(out, handler.Request{Namespace: "other", Name: v})
			}
		}
		return out
	})
	lx := widget("ns", "l")
	lx.Labels = map[string]string{"x": "one", "y": "two"}
	ly := widget("ns", "l")
	ly.Labels = map[string]string{"x": "two", "y": "three"}
	typedMap := handler.EnqueueRequestsFromTypedMapFunc(func(_ context.Context, g *runtimetest.Gadget) []handler.Request {
		return []handler.Request{{Namespace: g.Namespace, Name: "for-" + g.Name}}
	})

	for _, c := range []struct {
		name string
		h    source.EventHandler
		call call
		want []string
	}{
		{"object create", handler.EnqueueRequestForObject{}, create(a), []string{"ns/a"}},
		{"object update same key", handler.EnqueueRequestForObject{}, update(a, a2), []string{"ns/a"}},
		{"object update other key", handler.EnqueueRequestForObject{}, update(a, b), []string{"ns/a", "ns/b"}},
		{"object update without old", handler.EnqueueRequestForObject{}, update(nil, b), []string{"ns/b"}},
		{"object delete", handler.EnqueueRequestForObject{}, del(b), []string{"ns/b"}},
		{"object generic", handler.EnqueueRequestForObject{}, generic(b), []string{"ns/b"}},
		{"object generic nil", handler.EnqueueRequestForObject{}, generic(nil), nil},

		{"owner create", handler.EnqueueRequestForOwner("Widget"), create(owned), []string{"ns/w1", "ns/w2"}},
		{"owner create only controller", handler.EnqueueRequestForOwner("Widget", handler.OnlyControllerOwner()), create(owned), []string{"ns/w1"}},
		{"owner of another kind", handler.EnqueueRequestForOwner("Gadget"), create(owned), []string{"ns/g1"}},
		{"owner update old and new, once each", handler.EnqueueRequestForOwner("Widget"), update(owned, ownedLater), []string{"ns/w1", "ns/w2", "ns/w3"}},
		{"owner update only controller", handler.EnqueueRequestForOwner("Widget", handler.OnlyControllerOwner()), update(owned, ownedLater), []string{"ns/w1", "ns/w3"}},
		{"owner delete", handler.EnqueueRequestForOwner("Widget"), del(owned), []string{"ns/w1", "ns/w2"}},
		{"owner generic", handler.EnqueueRequestForOwner("Widget", handler.OnlyControllerOwner()), generic(owned), []string{"ns/w1"}},
		{"owner none", handler.EnqueueRequestForOwner("Widget"), create(orphan), nil},
		{"owner cluster-scoped", handler.EnqueueRequestForOwner("Rack", handler.OwnerIsClusterScoped()), create(clusterOwned), []string{"r1"}},

		{"map create", byLabel, create(lx), []string{"other/one", "other/two"}},
		{"map update deduplicated", byLabel, update(lx, ly), []string{"other/one", "other/three", "other/two"}},
		{"map update without old", byLabel, update(nil, ly), []string{"other/three", "other/two"}},
		{"map delete", byLabel, del(ly), []string{"other/three", "other/two"}},
		{"map generic nothing", byLabel, generic(a), nil},
		{"typed map of its type", typedMap, create(runtimetest.NewGadget("ns", "g")), []string{"ns/for-g"}},
		{"typed map ignores other types", typedMap, create(a), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := &recQueue{}
			c.call(context.Background(), c.h, q)
			if got := q.take(); !slices.Equal(got, c.want) {
				t.Fatalf("enqueued %q, want %q", got, c.want)
			}
		})
	}
}

func TestMapFuncGetsTheContext(t *testing.T) {
	type k struct{}
	ctx := context.WithValue(context.Background(), k{}, "v")
	var seen any
	h := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj meta.Object) []handler.Request {
		seen = ctx.Value(k{})
		return nil
	})
	h.Create(ctx, source.CreateEvent{Object: widget("ns", "a")}, &recQueue{})
	if seen != "v" {
		t.Fatal("map function did not get the event's context")
	}
}

func TestFuncs(t *testing.T) {
	var got []string
	h := handler.Funcs{
		CreateFunc: func(_ context.Context, e source.CreateEvent, q source.Queue) { got = append(got, "create") },
		DeleteFunc: func(_ context.Context, e source.DeleteEvent, q source.Queue) { got = append(got, "delete") },
	}
	q := &recQueue{}
	for _, c := range []call{create(widget("ns", "a")), update(nil, widget("ns", "a")), del(widget("ns", "a")), generic(widget("ns", "a"))} {
		c(context.Background(), h, q)
	}
	if !slices.Equal(got, []string{"create", "delete"}) {
		t.Fatalf("calls %q, want create and delete (nil functions skip)", got)
	}
	h2 := handler.Funcs{
		UpdateFunc:  func(_ context.Context, e source.UpdateEvent, q source.Queue) { got = append(got, "update") },
		GenericFunc: func(_ context.Context, e source.GenericEvent, q source.Queue) { got = append(got, "generic") },
	}
	update(nil, widget("ns", "a"))(context.Background(), h2, q)
	generic(widget("ns", "a"))(context.Background(), h2, q)
	if !slices.Equal(got[2:], []string{"update", "generic"}) {
		t.Fatalf("calls %q", got)
	}
}
