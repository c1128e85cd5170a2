package manager_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// startGC runs a manager with only the garbage collector over st.
func startGC(t *testing.T, st store.Store) *manager.Manager {
	t.Helper()
	m := newManager(t, st, manager.Options{})
	if err := manager.AddGarbageCollector(m, controller.Options{}); err != nil {
		t.Fatal(err)
	}
	runtimetest.Start(t, m)
	runtimetest.Recv(t, m.Elected(), "the manager to start")
	return m
}

func mustCreate(t *testing.T, st store.Writer, objs ...meta.Object) {
	t.Helper()
	for _, o := range objs {
		if err := st.Create(context.Background(), o); err != nil {
			t.Fatalf("create %s: %v", meta.KeyOf(o), err)
		}
	}
}

func mustDelete(t *testing.T, st store.Writer, obj meta.Object) {
	t.Helper()
	if err := st.Delete(context.Background(), obj); err != nil {
		t.Fatalf("delete %s: %v", meta.KeyOf(obj), err)
	}
}

// ownedBy returns a Gadget owned by each of owners (the first one its
// controller).
func ownedBy(name string, owners ...meta.Object) *runtimetest.Gadget {
	g := runtimetest.NewGadget("ns", name)
	for i, o := range owners {
		g.OwnerReferences = append(g.OwnerReferences, ref(o, i == 0))
	}
	return g
}

func ref(o meta.Object, controller bool) meta.OwnerReference {
	kind := map[string]string{
		fmt.Sprintf("%T", &runtimetest.Widget{}): runtimetest.WidgetKind,
		fmt.Sprintf("%T", &runtimetest.Gadget{}): runtimetest.GadgetKind,
		fmt.Sprintf("%T", &runtimetest.Rack{}):   runtimetest.RackKind,
	}[fmt.Sprintf("%T", o)]
	m := o.GetObjectMeta()
	return meta.OwnerReference{Kind: kind, Name: m.Name, UID: m.UID, Controller: controller}
}

func waitGone(t *testing.T, st store.Reader, objs ...meta.Object) {
	t.Helper()
	for _, o := range objs {
		key := meta.KeyOf(o)
		uid := o.GetObjectMeta().UID
		runtimetest.Eventually(t, fmt.Sprintf("%s (uid %s) to be collected", key, uid), func() (bool, string) {
			fresh := meta.DeepCopy(o)
			err := st.Get(context.Background(), key, fresh)
			if errs.IsNotFound(err) {
				return true, ""
			}
			if err != nil {
				return false, err.Error()
			}
			return fresh.GetObjectMeta().UID != uid, "still there"
		})
	}
}

func mustExist(t *testing.T, st store.Reader, objs ...meta.Object) {
	t.Helper()
	for _, o := range objs {
		fresh := meta.DeepCopy(o)
		if err := st.Get(context.Background(), meta.KeyOf(o), fresh); err != nil || fresh.GetObjectMeta().UID != o.GetObjectMeta().UID {
			t.Fatalf("%s (uid %s) was collected although it should be kept: %v", meta.KeyOf(o), o.GetObjectMeta().UID, err)
		}
	}
}

// settle proves that the Gadget collector got past everything created
// before: a Gadget whose owner never existed, created now, is collected
// after the ones before it in the same queue were handled.
func settle(t *testing.T, st store.Store, name string) {
	t.Helper()
	s := runtimetest.NewGadget("ns", name)
	s.OwnerReferences = []meta.OwnerReference{{Kind: runtimetest.WidgetKind, Name: "never", UID: "never-existed"}}
	mustCreate(t, st, s)
	waitGone(t, st, s)
}

func TestGarbageCollector(t *testing.T) {
	testGarbageCollector(t, runtimetest.MemoryBackend)
}

func testGarbageCollector(t *testing.T, b runtimetest.Backend) {
	t.Run("owner deleted", func(t *testing.T) {
		b.CheckLeaks(t)
		st := b.New(t, runtimetest.NewScheme())
		startGC(t, st)
		w := runtimetest.NewWidget("ns", "owner", 0)
		mustCreate(t, st, w)
		g1, g2 := ownedBy("g1", w), ownedBy("g2", w)
		g3 := runtimetest.NewGadget("ns", "g3")
		g3.OwnerReferences = []meta.OwnerReference{ref(w, false)} // not the controller: still a dependent
		mustCreate(t, st, g1, g2, g3)
		settle(t, st, "settle-1")
		mustExist(t, st, g1, g2, g3)
		mustDelete(t, st, w)
		waitGone(t, st, g1, g2, g3)
	})

	t.Run("unstructured dependent", func(t *testing.T) {
		b.CheckLeaks(t)
		st := b.New(t, runtimetest.NewScheme())
		startGC(t, st)
		w := runtimetest.NewWidget("ns", "owner", 0)
		mustCreate(t, st, w)
		d := runtimetest.NewDoodad("ns", "d", map[string]any{"x": "y"})
		d.OwnerReferences = []meta.OwnerReference{ref(w, true)}
		mustCreate(t, st, d)
		mustDelete(t, st, w)
		waitGone(t, st, d)
	})

	t.Run("cascade over two levels", func(t *testing.T) {
		b.CheckLeaks(t)
		st := b.New(t, runtimetest.NewScheme())
		startGC(t, st)
		w := runtimetest.NewWidget("ns", "root", 0)
		mustCreate(t, st, w)
		g1 := ownedBy("g1", w)
		mustCreate(t, st, g1)
		g2 := ownedBy("g2", g1) // a Gadget owned by a Gadget
		w2 := runtimetest.NewWidget("ns", "w2", 0)
		w2.OwnerReferences = []meta.OwnerReference{ref(g1, true)}
		mustCreate(t, st, g2, w2)
		settle(t, st, "settle-1")
		mustExist(t, st, g1, g2, w2)
		mustDelete(t, st, w)
		waitGone(t, st, g1, g2, w2)
	})

	t.Run("kept while an owner exists", func(t *testing.T) {
		b.CheckLeaks(t)
		st := b.New(t, runtimetest.NewScheme())
		startGC(t, st)
		w1, w2 := runtimetest.NewWidget("ns", "w1", 0), runtimetest.NewWidget("ns", "w2", 0)
		mustCreate(t, st, w1, w2)
		single := ownedBy("single", w1)
		both := ownedBy("both", w1, w2)
		foreign := runtimetest.NewGadget("ns", "foreign")
		foreign.OwnerReferences = []meta.OwnerReference{{Kind: "SomethingElse", Name: "x", UID: "x-uid"}}
		mustCreate(t, st, single, both, foreign)
		settle(t, st, "settle-1")
		mustExist(t, st, w1, w2, single, both, foreign)

		mustDelete(t, st, w2)
		settle(t, st, "settle-2")
		mustExist(t, st, single, both, foreign) // w1 still owns both
		mustDelete(t, st, w1)
		waitGone(t, st, single, both)
		settle(t, st, "settle-3")
		mustExist(t, st, foreign) // owners of unknown kinds are assumed present
	})

	t.Run("owner that never existed", func(t *testing.T) {
		b.CheckLeaks(t)
		st := b.New(t, runtimetest.NewScheme())
		startGC(t, st)
		w := runtimetest.NewWidget("ns", "real", 0)
		mustCreate(t, st, w)
		ghost := runtimetest.NewGadget("ns", "ghost")
		ghost.OwnerReferences = []meta.OwnerReference{{Kind: runtimetest.WidgetKind, Name: "nobody", UID: "no-such-uid"}}
		wrongUID := runtimetest.NewGadget("ns", "wrong-uid")
		wrongUID.OwnerReferences = []meta.OwnerReference{{Kind: runtimetest.WidgetKind, Name: "real", UID: "not-reals-uid"}}
		mustCreate(t, st, ghost, wrongUID)
		waitGone(t, st, ghost, wrongUID)
		mustExist(t, st, w)
	})

	t.Run("owner re-created with a new uid", func(t *testing.T) {
		b.CheckLeaks(t)
		st := b.New(t, runtimetest.NewScheme())
		startGC(t, st)
		w := runtimetest.NewWidget("ns", "phoenix", 0)
		mustCreate(t, st, w)
		old := ownedBy("old", w)
		mustCreate(t, st, old)
		settle(t, st, "settle-1")
		mustDelete(t, st, w)
		reborn := runtimetest.NewWidget("ns", "phoenix", 0)
		mustCreate(t, st, reborn)
		young := ownedBy("young", reborn)
		mustCreate(t, st, young)
		waitGone(t, st, old)
		settle(t, st, "settle-2")
		mustExist(t, st, reborn, young)
	})

	t.Run("cluster-scoped owner", func(t *testing.T) {
		b.CheckLeaks(t)
		st := b.New(t, runtimetest.NewScheme())
		startGC(t, st)
		r := &runtimetest.Rack{ObjectMeta: meta.ObjectMeta{Name: "rack"}}
		mustCreate(t, st, r)
		g := ownedBy("on-rack", r)
		mustCreate(t, st, g)
		settle(t, st, "settle-1")
		mustExist(t, st, g)
		mustDelete(t, st, r)
		waitGone(t, st, g)
	})

	t.Run("dependent already being deleted", func(t *testing.T) {
		b.CheckLeaks(t)
		st := b.New(t, runtimetest.NewScheme())
		startGC(t, st)
		w := runtimetest.NewWidget("ns", "owner", 0)
		mustCreate(t, st, w)
		g := ownedBy("finalized", w)
		g.Finalizers = []string{"example.com/hold"}
		mustCreate(t, st, g)
		mustDelete(t, st, runtimetest.NewGadget("ns", "finalized"))
		mustDelete(t, st, w)
		settle(t, st, "settle-1")
		var got runtimetest.Gadget
		if err := st.Get(context.Background(), meta.KeyOf(g), &got); err != nil || !got.IsBeingDeleted() {
			t.Fatalf("a dependent held by a finalizer: %v, %+v", err, got.ObjectMeta)
		}
		got.Finalizers = nil
		if err := st.Update(context.Background(), &got); err != nil {
			t.Fatal(err)
		}
		waitGone(t, st, g)
	})
}

// While the collector's watches are down, an owner is deleted and created
// again under the same name: after the relist its old dependents are
// collected, the new owner's kept.
func TestGarbageCollectorAfterAnOutage(t *testing.T) {
	runtimetest.CheckLeaks(t)
	for _, expired := range []bool{false, true} {
		t.Run(fmt.Sprintf("expired=%v", expired), func(t *testing.T) {
			runtimetest.CheckLeaks(t)
			inner := runtimetest.Memory(t, runtimetest.NewScheme())
			flaky := runtimetest.NewFlaky(inner)
			startGC(t, flaky)
			w := runtimetest.NewWidget("ns", "phoenix", 0)
			mustCreate(t, inner, w)
			old := ownedBy("old", w)
			mustCreate(t, inner, old)
			settle(t, inner, "settle-1")

			flaky.Cut(expired)
			mustDelete(t, inner, w)
			reborn := runtimetest.NewWidget("ns", "phoenix", 0)
			mustCreate(t, inner, reborn)
			young := ownedBy("young", reborn)
			mustCreate(t, inner, young)
			flaky.Restore()

			waitGone(t, inner, old)
			settle(t, inner, "settle-2")
			mustExist(t, inner, reborn, young)
		})
	}
}

// K8s semantics: a cluster-scoped object cannot have a namespaced owner;
// such a reference cannot be resolved, so the object is kept, quietly.
func TestGarbageCollectorUnresolvableOwner(t *testing.T) {
	runtimetest.CheckLeaks(t)
	st := runtimetest.Memory(t, runtimetest.NewScheme())
	m := startGC(t, st)
	w := runtimetest.NewWidget("ns", "w", 0)
	mustCreate(t, st, w)
	odd := &runtimetest.Rack{ObjectMeta: meta.ObjectMeta{Name: "odd", OwnerReferences: []meta.OwnerReference{ref(w, true)}}}
	mustCreate(t, st, odd)
	sentinel := &runtimetest.Rack{ObjectMeta: meta.ObjectMeta{Name: "sentinel",
		OwnerReferences: []meta.OwnerReference{{Kind: runtimetest.RackKind, Name: "never", UID: "never-existed"}}}}
	mustCreate(t, st, sentinel)
	waitGone(t, st, sentinel)
	mustExist(t, st, odd)
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "controller_runtime_reconcile_errors_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			if mt.GetCounter().GetValue() != 0 {
				t.Fatalf("the collector failed reconciles: %v", mt)
			}
		}
	}
}
