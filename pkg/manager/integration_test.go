package manager_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/controller/builder"
	"github.com/capstanhq/capstan/pkg/controller/predicate"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
	"github.com/capstanhq/capstan/pkg/store"
)

// fastCache retries failed lists and watches quickly, so that recovery
// after an outage does not wait for the production backoff.
var fastCache = source.CacheOptions{Informer: source.InformerOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}}

// widgetReconciler copies each Widget's spec.size into status.observedSize
// and misbehaves on request, by name: "flaky-*" fails three times first,
// "terminal-*" always fails terminally, "panic-*" panics once, "ro-*" only
// records the size it saw, and a name with a gate blocks until the gate
// is closed.
type widgetReconciler struct {
	mgr *manager.Manager

	mu      sync.Mutex
	calls   map[string]int
	gone    map[string]int // reconciles that found no object
	seen    map[string]int // the spec.size each name's last reconcile read
	gates   map[string]chan struct{}
	entered chan string     // names that reached a gate
	live    map[string]bool // whether the context was live after the gate
}

func newWidgetReconciler(mgr *manager.Manager) *widgetReconciler {
	return &widgetReconciler{mgr: mgr, calls: map[string]int{}, gone: map[string]int{}, seen: map[string]int{}, gates: map[string]chan struct{}{},
		entered: make(chan string, 100), live: map[string]bool{}}
}

func (r *widgetReconciler) gate(name string) chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := make(chan struct{})
	r.gates[name] = g
	return g
}

func (r *widgetReconciler) count(name string) (calls, gone int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[name], r.gone[name]
}

func (r *widgetReconciler) Reconcile(ctx context.Context, req controller.Request) (controller.Result, error) {
	r.mu.Lock()
	r.calls[req.Name]++
	n := r.calls[req.Name]
	g := r.gates[req.Name]
	r.mu.Unlock()
	switch {
	case strings.HasPrefix(req.Name, "flaky-") && n <= 3:
		return controller.Result{}, errors.New("flaky")
	case strings.HasPrefix(req.Name, "terminal-"):
		return controller.Result{}, controller.TerminalError(errors.New("cannot"))
	case strings.HasPrefix(req.Name, "panic-") && n == 1:
		panic("reconciler bug")
	}
	if g != nil {
		r.entered <- req.Name
		<-g
		r.mu.Lock()
		r.live[req.Name] = ctx.Err() == nil
		r.mu.Unlock()
	}
	var w runtimetest.Widget
	if err := r.mgr.Cache().Get(ctx, req, &w); err != nil {
		if errs.IsNotFound(err) {
			r.mu.Lock()
			r.gone[req.Name]++
			r.mu.Unlock()
			return controller.Result{}, nil
		}
		return controller.Result{}, err
	}
	r.mu.Lock()
	r.seen[req.Name] = w.Spec.Size
	r.mu.Unlock()
	if w.Status.ObservedSize == w.Spec.Size || strings.HasPrefix(req.Name, "ro-") {
		return controller.Result{}, nil
	}
	w.Status.ObservedSize = w.Spec.Size
	// A stale cache read ends in a Conflict, which requeues.
	return controller.Result{}, r.mgr.Store().UpdateStatus(ctx, &w)
}

// harness is a manager with the Widget controller over a store, and the
// store the test writes to directly.
type harness struct {
	mgr  *manager.Manager
	rec  *widgetReconciler
	st   store.Store // direct writes
	stop func() error
}

func newHarness(t *testing.T, mgrStore, direct store.Store, opts manager.Options) *harness {
	t.Helper()
	opts.MetricsBindAddress = "127.0.0.1:0"
	mgr := newManager(t, mgrStore, opts)
	rec := newWidgetReconciler(mgr)
	if err := builder.ControllerManagedBy(mgr).
		For(&runtimetest.Widget{}, builder.WithPredicates(predicate.GenerationChanged())).
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).
		Complete(rec); err != nil {
		t.Fatal(err)
	}
	return &harness{mgr: mgr, rec: rec, st: direct}
}

func (h *harness) start(t *testing.T) {
	t.Helper()
	h.stop = runtimetest.Start(t, h.mgr)
	runtimetest.Recv(t, h.mgr.Elected(), "the manager to start")
}

func (h *harness) create(t *testing.T, name string, size int) *runtimetest.Widget {
	t.Helper()
	w := runtimetest.NewWidget("ns", name, size)
	mustCreate(t, h.st, w)
	return w
}

func (h *harness) resize(t *testing.T, name string, size int) string {
	t.Helper()
	var w runtimetest.Widget
	if err := h.st.Get(context.Background(), meta.Key{Namespace: "ns", Name: name}, &w); err != nil {
		t.Fatal(err)
	}
	w.Spec.Size = size
	if err := h.st.Update(context.Background(), &w); err != nil {
		t.Fatal(err)
	}
	return w.ResourceVersion
}

// waitObserved waits until every named Widget's status shows its spec.
func (h *harness) waitObserved(t *testing.T, names ...string) {
	t.Helper()
	runtimetest.Eventually(t, fmt.Sprintf("%d widgets to be reconciled", len(names)), func() (bool, string) {
		for _, n := range names {
			var w runtimetest.Widget
			if err := h.st.Get(context.Background(), meta.Key{Namespace: "ns", Name: n}, &w); err != nil {
				return false, fmt.Sprintf("%s: %v", n, err)
			}
			if w.Status.ObservedSize != w.Spec.Size {
				return false, fmt.Sprintf("%s: observed %d, spec %d", n, w.Status.ObservedSize, w.Spec.Size)
			}
		}
		return true, ""
	})
}

// scrape returns the manager's /metrics lines that start with prefix.
func (h *harness) scrape(t *testing.T, prefix string) []string {
	t.Helper()
	resp, err := http.Get("http://" + h.mgr.Addr("metrics") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), prefix) {
			out = append(out, sc.Text())
		}
	}
	return out
}

func (h *harness) metric(t *testing.T, series string) string {
	t.Helper()
	for _, l := range h.scrape(t, series) {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			return v
		}
	}
	return ""
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%02d", prefix, i)
	}
	return out
}

func TestRuntime(t *testing.T) { testRuntime(t, runtimetest.MemoryBackend) }

// testRuntime runs the runtime's end-to-end behaviour over one backend.
func testRuntime(t *testing.T, b runtimetest.Backend) {
	t.Run("initial sync then reconcile", func(t *testing.T) {
		b.CheckLeaks(t)
		st := b.New(t, runtimetest.NewScheme())
		h := newHarness(t, st, st, manager.Options{})
		pre := names("pre-", 30)
		for i, n := range pre {
			h.create(t, n, i+1)
		}
		h.start(t)
		h.waitObserved(t, pre...)
		h.create(t, "post", 7)
		h.waitObserved(t, "post")
		for _, n := range pre {
			if c, _ := h.rec.count(n); c < 1 {
				t.Fatalf("%s never reconciled", n)
			}
		}
		// The metrics server shows controller-runtime's series.
		runtimetest.Eventually(t, "metrics after reconciles", func() (bool, string) {
			v := h.metric(t, `controller_runtime_reconcile_total{controller="widget",result="success"}`)
			return v != "" && v != "0", strings.Join(h.scrape(t, "controller_runtime_reconcile_total"), "; ")
		})
		for _, series := range []string{
			`controller_runtime_max_concurrent_reconciles{controller="widget"}`,
			`controller_runtime_active_workers{controller="widget"}`,
			`controller_runtime_reconcile_time_seconds_count{controller="widget"}`,
			`workqueue_adds_total{controller="widget",name="widget"}`,
			`workqueue_depth{controller="widget",name="widget"}`,
			`workqueue_queue_duration_seconds_count{controller="widget",name="widget"}`,
			`go_goroutines`,
		} {
			if h.metric(t, series) == "" {
				t.Errorf("/metrics lacks %s", series)
			}
		}
		if v := h.metric(t, `controller_runtime_max_concurrent_reconciles{controller="widget"}`); v != "2" {
			t.Errorf("max_concurrent_reconciles = %q, want 2", v)
		}
	})

	t.Run("update storm collapses", func(t *testing.T) {
		b.CheckLeaks(t)
		st := b.New(t, runtimetest.NewScheme())
		h := newHarness(t, st, st, manager.Options{})
		// A read-only reconciler: a writing one also counts the retries
		// of status writes from a cache that has not seen its own last
		// write yet, which is not what this measures.
		gate := h.rec.gate("ro-storm")
		h.create(t, "ro-storm", 0)
		h.start(t)
		if got := runtimetest.Recv(t, h.rec.entered, "the first reconcile"); got != "ro-storm" {
			t.Fatalf("reconciled %s first", got)
		}
		const updates = 50
		var last string
		for i := 1; i <= updates; i++ {
			last = h.resize(t, "ro-storm", i)
		}
		// Let every update reach the cache (and the queue) while the first
		// reconcile still holds the key.
		runtimetest.Eventually(t, "the cache to see the last update", func() (bool, string) {
			var w runtimetest.Widget
			err := h.mgr.Cache().Get(context.Background(), meta.Key{Namespace: "ns", Name: "ro-storm"}, &w)
			return err == nil && w.ResourceVersion == last, fmt.Sprintf("%v %s", err, w.ResourceVersion)
		})
		close(gate)
		runtimetest.Eventually(t, "a reconcile of the last update", func() (bool, string) {
			h.rec.mu.Lock()
			defer h.rec.mu.Unlock()
			return h.rec.seen["ro-storm"] == updates, fmt.Sprint(h.rec.seen["ro-storm"])
		})
		h.create(t, "after-storm", 1)
		h.waitObserved(t, "after-storm")
		if c, _ := h.rec.count("ro-storm"); c > 3 {
			t.Fatalf("%d updates gave %d reconciles, want at most 3", updates, c)
		}
	})

	t.Run("errors, backoff, terminal errors and panics", func(t *testing.T) {
		b.CheckLeaks(t)
		st := b.New(t, runtimetest.NewScheme())
		h := newHarness(t, st, st, manager.Options{})
		h.start(t)
		h.create(t, "flaky-1", 3)
		h.create(t, "terminal-1", 3)
		h.create(t, "panic-1", 3)
		h.waitObserved(t, "flaky-1", "panic-1")
		if c, _ := h.rec.count("flaky-1"); c != 4 {
			t.Fatalf("flaky-1 reconciled %d times, want 4 (three failures, one success)", c)
		}
		if c, _ := h.rec.count("panic-1"); c != 2 {
			t.Fatalf("panic-1 reconciled %d times, want 2", c)
		}
		runtimetest.Eventually(t, "the terminal error to be counted", func() (bool, string) {
			v := h.metric(t, `controller_runtime_terminal_reconcile_errors_total{controller="widget"}`)
			return v == "1", v
		})
		// Retries are counted when they are scheduled: three for flaky-1,
		// one for the panic, none for the terminal error.
		if v := h.metric(t, `workqueue_retries_total{controller="widget",name="widget"}`); v != "4" {
			t.Fatalf("workqueue_retries_total = %s, want 4", v)
		}
		if c, _ := h.rec.count("terminal-1"); c != 1 {
			t.Fatalf("terminal-1 reconciled %d times, want 1", c)
		}
		if v := h.metric(t, `controller_runtime_reconcile_panics_total{controller="widget"}`); v != "1" {
			t.Fatalf("reconcile_panics_total = %s, want 1", v)
		}
		if v := h.metric(t, `controller_runtime_reconcile_errors_total{controller="widget"}`); v != "5" {
			t.Fatalf("reconcile_errors_total = %s, want 5", v)
		}
	})

	t.Run("graceful shutdown waits for in-flight reconciles", func(t *testing.T) {
		b.CheckLeaks(t)
		st := b.New(t, runtimetest.NewScheme())
		h := newHarness(t, st, st, manager.Options{GracefulShutdownTimeout: runtimetest.Wait})
		gate := h.rec.gate("slow")
		h.create(t, "slow", 5)
		h.start(t)
		runtimetest.Recv(t, h.rec.entered, "the slow reconcile")
		stopped := make(chan error, 1)
		go func() { stopped <- h.stop() }()
		select {
		case err := <-stopped:
			t.Fatalf("the manager stopped (%v) while a reconcile was in flight", err)
		case <-time.After(100 * time.Millisecond):
		}
		close(gate)
		if err := runtimetest.Recv(t, stopped, "the manager to stop"); err != nil {
			t.Fatalf("Start = %v, want nil", err)
		}
		h.rec.mu.Lock()
		live := h.rec.live["slow"]
		h.rec.mu.Unlock()
		if !live {
			t.Fatal("the in-flight reconcile's context was cancelled during a graceful stop")
		}
		h.waitObserved(t, "slow") // its write went through
	})
}

// TestRuntimeSurvivesAStoreOutage cuts the manager's connection to a
// memory store, changes objects behind its back, and restores it: every
// change is reconciled afterwards, whether the watches resume or relist.
func TestRuntimeSurvivesAStoreOutage(t *testing.T) {
	runtimetest.CheckLeaks(t)
	for _, expired := range []bool{false, true} {
		t.Run(fmt.Sprintf("expired=%v", expired), func(t *testing.T) {
			runtimetest.CheckLeaks(t)
			inner := runtimetest.Memory(t, runtimetest.NewScheme())
			flaky := runtimetest.NewFlaky(inner)
			h := newHarness(t, flaky, inner, manager.Options{Cache: fastCache})
			h.start(t)
			outage(t, h, func() { flaky.Cut(expired) }, flaky.Restore, true)
		})
	}
}

// outage runs the outage scenario: down takes the store away from the
// manager, up brings it back. The test changes objects through h.st while
// the store is down when it can (whileDown), else right after up, before
// the manager has caught up; writes are retried until the store answers.
func outage(t *testing.T, h *harness, down, up func(), whileDown bool) {
	t.Helper()
	before := names("before-", 10)
	for i, n := range before {
		h.create(t, n, i+1)
	}
	h.waitObserved(t, before...)
	down()
	if !whileDown {
		up()
	}
	for i, n := range before[:5] {
		retry(t, "resize "+n, func() error { return h.tryResize(n, 100+i) })
	}
	for _, n := range before[5:7] {
		retry(t, "delete "+n, func() error {
			err := h.st.Delete(context.Background(), runtimetest.NewWidget("ns", n, 0))
			if errs.IsNotFound(err) {
				return nil // an earlier try got through
			}
			return err
		})
	}
	during := names("during-", 5)
	for i, n := range during {
		retry(t, "create "+n, func() error {
			err := h.st.Create(context.Background(), runtimetest.NewWidget("ns", n, i+1))
			if errs.IsAlreadyExists(err) {
				return nil
			}
			return err
		})
	}
	if whileDown {
		up()
	}
	all := append(append(append([]string{}, before[:5]...), before[7:]...), during...)
	h.waitObserved(t, all...)
	for _, n := range before[5:7] {
		runtimetest.Eventually(t, n+"'s deletion to be reconciled", func() (bool, string) {
			_, gone := h.rec.count(n)
			return gone > 0, ""
		})
	}
	// The runtime keeps working after the outage.
	retry(t, "create after", func() error { return h.st.Create(context.Background(), runtimetest.NewWidget("ns", "after", 9)) })
	h.waitObserved(t, "after")
}

func (h *harness) tryResize(name string, size int) error {
	var w runtimetest.Widget
	if err := h.st.Get(context.Background(), meta.Key{Namespace: "ns", Name: name}, &w); err != nil {
		return err
	}
	w.Spec.Size = size
	return h.st.Update(context.Background(), &w)
}

// retry runs fn until it succeeds, within runtimetest.Wait.
func retry(t *testing.T, what string, fn func() error) {
	t.Helper()
	runtimetest.Eventually(t, what, func() (bool, string) {
		err := fn()
		return err == nil, fmt.Sprint(err)
	})
}
