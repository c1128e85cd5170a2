package builder_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/controller/builder"
	"github.com/capstanhq/capstan/pkg/controller/handler"
	"github.com/capstanhq/capstan/pkg/controller/predicate"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
	"github.com/capstanhq/capstan/pkg/store"
)

// Built controllers, their caches and managers leave nothing running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a reconciler that counts reconciles per key.
type recorder struct {
	mu sync.Mutex
	n  map[meta.Key]int
}

func (r *recorder) Reconcile(_ context.Context, req controller.Request) (controller.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[meta.Key]int{}
	}
	r.n[req]++
	return controller.Result{}, nil
}

func (r *recorder) count(k meta.Key) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[k]
}

func (r *recorder) keys() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprint(r.n)
}

// waitMore waits until k was reconciled more than before times, and
// returns the new count.
func (r *recorder) waitMore(t *testing.T, k meta.Key, before int) int {
	t.Helper()
	runtimetest.Eventually(t, fmt.Sprintf("a reconcile of %s", k), func() (bool, string) {
		return r.count(k) > before, r.keys()
	})
	return r.count(k)
}

func newManager(t *testing.T) (*manager.Manager, store.Store) {
	t.Helper()
	st := runtimetest.Memory(t, runtimetest.NewScheme())
	mgr, err := manager.New(manager.Options{Store: st, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return mgr, st
}

func k(ns, name string) meta.Key { return meta.Key{Namespace: ns, Name: name} }

func create(t *testing.T, st store.Store, objs ...meta.Object) {
	t.Helper()
	for _, o := range objs {
		if err := st.Create(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	}
}

func touch[T any, PT interface {
	*T
	meta.Object
}](t *testing.T, st store.Store, key meta.Key, change func(PT)) {
	t.Helper()
	obj := PT(new(T))
	if err := st.Get(context.Background(), key, obj); err != nil {
		t.Fatal(err)
	}
	change(obj)
	if err := st.Update(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
}

func gadgetOwnedBy(name string, owner meta.Object, kind string, controller bool) *runtimetest.Gadget {
	g := runtimetest.NewGadget("ns", name)
	om := owner.GetObjectMeta()
	g.OwnerReferences = []meta.OwnerReference{{Kind: kind, Name: om.Name, UID: om.UID, Controller: controller}}
	return g
}

func TestForOwnsWatchesAndFilters(t *testing.T) {
	mgr, st := newManager(t)
	rec := &recorder{}
	raw := make(chan source.GenericEvent, 1)
	notIgnored := predicate.NewPredicateFuncs(func(o meta.Object) bool { return !strings.HasPrefix(o.GetObjectMeta().Name, "ignored") })
	c, err := builder.ControllerManagedBy(mgr).
		For(&runtimetest.Widget{}, builder.WithPredicates(predicate.GenerationChanged())).
		Owns(&runtimetest.Gadget{}).
		Watches(&runtimetest.Rack{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o meta.Object) []handler.Request {
			return []handler.Request{{Namespace: "ns", Name: "from-" + o.GetObjectMeta().Name}}
		})).
		WatchesRawSource(source.Channel(raw, handler.EnqueueRequestForObject{})).
		WithEventFilter(notIgnored).
		Build(rec)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name() != "widget" {
		t.Fatalf("default name %q, want the For kind in lower case", c.Name())
	}

	w1 := runtimetest.NewWidget("ns", "w1", 1)
	create(t, st, w1, runtimetest.NewWidget("ns", "ignored-w", 1))
	runtimetest.Start(t, mgr)
	n1 := rec.waitMore(t, k("ns", "w1"), 0)

	// Owns: a change to a Gadget the widget controls reconciles the widget.
	w2 := runtimetest.NewWidget("ns", "w2", 1)
	create(t, st, w2)
	n2 := rec.waitMore(t, k("ns", "w2"), 0)
	create(t, st,
		gadgetOwnedBy("g1", w1, runtimetest.WidgetKind, true),
		gadgetOwnedBy("g2", w2, runtimetest.WidgetKind, false), // not the controller
		gadgetOwnedBy("ignored-g", w2, runtimetest.WidgetKind, true),
	)
	n1 = rec.waitMore(t, k("ns", "w1"), n1)

	// Watches: a Rack maps to a key of its own choosing.
	create(t, st, &runtimetest.Rack{ObjectMeta: meta.ObjectMeta{Name: "r1"}})
	rec.waitMore(t, k("ns", "from-r1"), 0)

	// Raw sources are wired as they are.
	raw <- source.GenericEvent{Object: runtimetest.NewWidget("ns", "raw", 0)}
	rec.waitMore(t, k("ns", "raw"), 0)

	// For's own predicate: a status-only change does not reconcile; a spec
	// change does.
	var w runtimetest.Widget
	if err := st.Get(context.Background(), k("ns", "w1"), &w); err != nil {
		t.Fatal(err)
	}
	w.Status.Phase = "seen"
	if err := st.UpdateStatus(context.Background(), &w); err != nil {
		t.Fatal(err)
	}
	touch(t, st, k("ns", "w1"), func(w *runtimetest.Widget) { w.Spec.Size = 2 })
	n1 = rec.waitMore(t, k("ns", "w1"), n1)

	// A sentinel through the same queue after all of that: the status
	// update, the non-controller gadget and the ignored objects must not
	// have reconciled anything.
	touch(t, st, k("ns", "w1"), func(w *runtimetest.Widget) { w.Spec.Size = 3 })
	rec.waitMore(t, k("ns", "w1"), n1)
	if got := rec.count(k("ns", "w2")); got != n2 {
		t.Errorf("w2 reconciled %d times, want %d: a non-controller owner or an ignored gadget enqueued it", got, n2)
	}
	if got := rec.count(k("ns", "ignored-w")); got != 0 {
		t.Errorf("the event filter let ignored-w through %d times", got)
	}
	if got := rec.count(k("ns", "g1")); got != 0 {
		t.Error("Owns enqueued the owned object itself")
	}
	if got := rec.count(k("ns", "w1")); got != n1+1 {
		t.Errorf("w1 reconciled %d times, want %d: the status-only change passed GenerationChanged", got, n1+1)
	}
}

func TestOwnsWithAClusterScopedFor(t *testing.T) {
	mgr, st := newManager(t)
	rec := &recorder{}
	if err := builder.ControllerManagedBy(mgr).For(&runtimetest.Rack{}).Owns(&runtimetest.Widget{}).Complete(rec); err != nil {
		t.Fatal(err)
	}
	rack := &runtimetest.Rack{ObjectMeta: meta.ObjectMeta{Name: "r1"}}
	create(t, st, rack)
	runtimetest.Start(t, mgr)
	n := rec.waitMore(t, k("", "r1"), 0)
	w := runtimetest.NewWidget("ns", "w", 0)
	w.OwnerReferences = []meta.OwnerReference{{Kind: runtimetest.RackKind, Name: "r1", UID: rack.UID, Controller: true}}
	create(t, st, w)
	rec.waitMore(t, k("", "r1"), n)
	if got := rec.count(k("ns", "r1")); got != 0 {
		t.Fatal("the cluster-scoped owner was enqueued in its dependent's namespace")
	}
}

func TestNamedOptionsAndMetrics(t *testing.T) {
	mgr, st := newManager(t)
	rec := &recorder{}
	f := false
	c, err := builder.ControllerManagedBy(mgr).
		Named("custom").
		For(&runtimetest.Widget{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: 3, NeedLeaderElection: &f}).
		Build(rec)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name() != "custom" || c.NeedLeaderElection() {
		t.Fatalf("name %q, leader election %v", c.Name(), c.NeedLeaderElection())
	}
	create(t, st, runtimetest.NewWidget("ns", "a", 0))
	runtimetest.Start(t, mgr)
	rec.waitMore(t, k("ns", "a"), 0)
	runtimetest.Eventually(t, "the controller's metrics in the manager's registry", func() (bool, string) {
		mfs, err := mgr.Registry().Gather()
		if err != nil {
			return false, err.Error()
		}
		var found []string
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "controller" && l.GetValue() == "custom" {
						found = append(found, mf.GetName())
					}
				}
			}
		}
		s := strings.Join(found, " ")
		return strings.Contains(s, "controller_runtime_reconcile_total") &&
			strings.Contains(s, "controller_runtime_max_concurrent_reconciles") &&
			strings.Contains(s, "workqueue_adds_total"), s
	})
}

func TestBuildErrors(t *testing.T) {
	mgr, _ := newManager(t)
	rec := &recorder{}
	type unregistered struct{ meta.ObjectMeta }
	for _, c := range []struct {
		name  string
		b     *builder.Builder
		field string
	}{
		{"no For", builder.ControllerManagedBy(mgr).Owns(&runtimetest.Gadget{}), "for"},
		{"For twice", builder.ControllerManagedBy(mgr).For(&runtimetest.Widget{}).For(&runtimetest.Gadget{}), ""},
		{"For of an unregistered type", builder.ControllerManagedBy(mgr).For(&unregistered{}), "for.kind"},
		{"Owns of an unregistered type", builder.ControllerManagedBy(mgr).For(&runtimetest.Widget{}).Owns(&unregistered{}), "kind"},
		{"Watches of an unregistered type", builder.ControllerManagedBy(mgr).For(&runtimetest.Widget{}).Watches(&unregistered{}, handler.EnqueueRequestForObject{}), "kind"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.b.Build(rec)
			if !errs.IsInvalidArgument(err) {
				t.Fatalf("Build: %v, want InvalidArgument", err)
			}
			if c.field != "" && errs.FieldOf(err) != c.field {
				t.Fatalf("field %q, want %q (%v)", errs.FieldOf(err), c.field, err)
			}
		})
	}
	if _, err := builder.ControllerManagedBy(mgr).Named("").For(&runtimetest.Widget{}).Build(nil); !errs.IsInvalidArgument(err) {
		t.Fatalf("nil reconciler: %v, want InvalidArgument", err)
	}
}
