package controller_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/client-go/util/workqueue"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
)

type request = controller.Request

func key(name string) request { return request{Namespace: "ns", Name: name} }

// spyLimiter is a fast rate limiter that records how the controller uses
// it.
type spyLimiter struct {
	workqueue.TypedRateLimiter[request]
	mu      sync.Mutex
	whens   map[request]int
	forgets map[request]int
}

func newSpyLimiter() *spyLimiter {
	return &spyLimiter{
		TypedRateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[request](time.Millisecond, 10*time.Millisecond),
		whens:            map[request]int{}, forgets: map[request]int{},
	}
}

func (s *spyLimiter) When(r request) time.Duration {
	s.mu.Lock()
	s.whens[r]++
	s.mu.Unlock()
	return s.TypedRateLimiter.When(r)
}

func (s *spyLimiter) Forget(r request) {
	s.mu.Lock()
	s.forgets[r]++
	s.mu.Unlock()
	s.TypedRateLimiter.Forget(r)
}

func (s *spyLimiter) counts(r request) (whens, forgets int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.whens[r], s.forgets[r]
}

// calls counts reconciles per key.
type calls struct {
	mu sync.Mutex
	n  map[request]int
}

func (c *calls) inc(r request) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[request]int{}
	}
	c.n[r]++
	return c.n[r]
}

func (c *calls) get(r request) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[r]
}

func (c *calls) waitFor(t *testing.T, r request, n int) {
	t.Helper()
	runtimetest.Eventually(t, fmt.Sprintf("%d reconciles of %s", n, r), func() (bool, string) {
		got := c.get(r)
		return got >= n, fmt.Sprintf("%d so far", got)
	})
}

// run starts c and returns a function that stops it and returns Start's
// result.
func run(t *testing.T, c *controller.Controller) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Start(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = runtimetest.Recv(t, done, "the controller to stop")
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func newController(t *testing.T, r controller.Reconciler, opts controller.Options) *controller.Controller {
	t.Helper()
	if opts.RateLimiter == nil {
		opts.RateLimiter = newSpyLimiter()
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	c, err := controller.New("test", r, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// metric returns the value of the metric name with the given labels in
// reg (counter, gauge, or a histogram's sample count).
func metric(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue next
				}
			}
			return value(m)
		}
	}
	return 0
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

func TestNewValidates(t *testing.T) {
	r := controller.Func(func(context.Context, request) (controller.Result, error) { return controller.Result{}, nil })
	if _, err := controller.New("", r, controller.Options{}); !errs.IsInvalidArgument(err) {
		t.Fatalf("empty name: %v, want InvalidArgument", err)
	}
	if _, err := controller.New("x", nil, controller.Options{}); !errs.IsInvalidArgument(err) {
		t.Fatalf("nil reconciler: %v, want InvalidArgument", err)
	}
	c, err := controller.New("x", r, controller.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Name() != "x" || !c.NeedLeaderElection() {
		t.Fatalf("name %q, leader election %v; want x, true by default", c.Name(), c.NeedLeaderElection())
	}
	f := false
	c2, _ := controller.New("y", r, controller.Options{NeedLeaderElection: &f})
	if c2.NeedLeaderElection() {
		t.Fatal("NeedLeaderElection ignores the option")
	}
}

func TestSuccessForgetsTheKey(t *testing.T) {
	var n calls
	lim := newSpyLimiter()
	c := newController(t, controller.Func(func(_ context.Context, r request) (controller.Result, error) {
		n.inc(r)
		return controller.Result{}, nil
	}), controller.Options{RateLimiter: lim})
	run(t, c)
	c.Queue().Add(key("a"))
	n.waitFor(t, key("a"), 1)
	runtimetest.Eventually(t, "Forget", func() (bool, string) {
		w, f := lim.counts(key("a"))
		return f == 1 && w == 0, fmt.Sprintf("whens %d forgets %d", w, f)
	})
}

func TestErrorsRequeueWithBackoffUntilSuccess(t *testing.T) {
	var n calls
	lim := newSpyLimiter()
	reg := prometheus.NewRegistry()
	c := newController(t, controller.Func(func(_ context.Context, r request) (controller.Result, error) {
		if n.inc(r) <= 3 {
			return controller.Result{}, errors.New("not yet")
		}
		return controller.Result{}, nil
	}), controller.Options{RateLimiter: lim, Registry: reg})
	run(t, c)
	c.Queue().Add(key("a"))
	n.waitFor(t, key("a"), 4)
	runtimetest.Eventually(t, "the success to be counted", func() (bool, string) {
		s := metric(t, reg, "controller_runtime_reconcile_total", "controller", "test", "result", "success")
		return s == 1, fmt.Sprint(s)
	})
	if w, f := lim.counts(key("a")); w != 3 || f != 1 {
		t.Fatalf("rate limiter asked %d times and forgotten %d times, want 3 and 1", w, f)
	}
	if got := metric(t, reg, "controller_runtime_reconcile_errors_total", "controller", "test"); got != 3 {
		t.Fatalf("errors_total = %v, want 3", got)
	}
	if got := metric(t, reg, "controller_runtime_reconcile_total", "controller", "test", "result", "error"); got != 3 {
		t.Fatalf("reconcile_total{result=error} = %v, want 3", got)
	}
	if got := metric(t, reg, "workqueue_retries_total", "name", "test"); got != 3 {
		t.Fatalf("workqueue_retries_total = %v, want 3", got)
	}
	if n.get(key("a")) != 4 {
		t.Fatalf("%d reconciles after success, want 4", n.get(key("a")))
	}
}

func TestTerminalErrorsAreNotRetried(t *testing.T) {
	var n calls
	lim := newSpyLimiter()
	reg := prometheus.NewRegistry()
	logs := &runtimetest.LogSink{}
	c := newController(t, controller.Func(func(_ context.Context, r request) (controller.Result, error) {
		n.inc(r)
		switch r.Name {
		case "terminal":
			return controller.Result{}, controller.TerminalError(errors.New("bad spec"))
		case "wrapped":
			return controller.Result{}, fmt.Errorf("while reconciling: %w", controller.TerminalError(errors.New("bad spec")))
		}
		return controller.Result{}, nil
	}), controller.Options{RateLimiter: lim, Registry: reg, Logger: logs.Logger()})
	run(t, c)
	c.Queue().Add(key("terminal"))
	c.Queue().Add(key("wrapped"))
	n.waitFor(t, key("wrapped"), 1)
	// Every key goes through the same single worker in order: once the
	// sentinel ran, a retry of the others would have been queued before it.
	c.Queue().Add(key("sentinel"))
	n.waitFor(t, key("sentinel"), 1)
	runtimetest.Eventually(t, "terminal errors to be counted", func() (bool, string) {
		v := metric(t, reg, "controller_runtime_terminal_reconcile_errors_total", "controller", "test")
		return v == 2, fmt.Sprint(v)
	})
	for _, k := range []string{"terminal", "wrapped"} {
		if got := n.get(key(k)); got != 1 {
			t.Errorf("%s reconciled %d times, want 1", k, got)
		}
		if w, f := lim.counts(key(k)); w != 0 || f != 1 {
			t.Errorf("%s: rate limiter asked %d times, forgotten %d times; want 0 and 1", k, w, f)
		}
	}
	if got := metric(t, reg, "controller_runtime_reconcile_errors_total", "controller", "test"); got != 2 {
		t.Fatalf("errors_total = %v, want 2", got)
	}
	if len(logs.Grep("terminal error", "bad spec")) != 2 {
		t.Fatalf("terminal errors not logged: %q", logs.Lines())
	}
	if !controller.IsTerminal(controller.TerminalError(nil)) || controller.IsTerminal(errors.New("x")) {
		t.Fatal("IsTerminal is wrong")
	}
	inner := errs.New(errs.InvalidArgument, "bad")
	if !errors.Is(controller.TerminalError(inner), inner) {
		t.Fatal("TerminalError does not unwrap")
	}
}

func TestRequeueAfterAndRequeue(t *testing.T) {
	var n calls
	lim := newSpyLimiter()
	reg := prometheus.NewRegistry()
	var mu sync.Mutex
	var times []time.Time
	const after = 50 * time.Millisecond
	c := newController(t, controller.Func(func(_ context.Context, r request) (controller.Result, error) {
		i := n.inc(r)
		if r.Name == "after" {
			mu.Lock()
			times = append(times, time.Now())
			mu.Unlock()
			if i == 1 {
				return controller.Result{RequeueAfter: after, Requeue: true}, nil
			}
		}
		if r.Name == "again" && i <= 2 {
			return controller.Result{Requeue: true}, nil
		}
		return controller.Result{}, nil
	}), controller.Options{RateLimiter: lim, Registry: reg})
	run(t, c)
	c.Queue().Add(key("after"))
	c.Queue().Add(key("again"))
	n.waitFor(t, key("after"), 2)
	n.waitFor(t, key("again"), 3)
	mu.Lock()
	gap := times[1].Sub(times[0])
	mu.Unlock()
	if gap < after {
		t.Fatalf("RequeueAfter %v reconciled again after %v", after, gap)
	}
	// RequeueAfter forgets the failures and does not use the limiter;
	// Requeue does.
	if w, _ := lim.counts(key("after")); w != 0 {
		t.Fatalf("RequeueAfter consulted the rate limiter %d times", w)
	}
	if w, _ := lim.counts(key("again")); w != 2 {
		t.Fatalf("Requeue consulted the rate limiter %d times, want 2", w)
	}
	runtimetest.Eventually(t, "results to be counted", func() (bool, string) {
		ra := metric(t, reg, "controller_runtime_reconcile_total", "controller", "test", "result", "requeue_after")
		rq := metric(t, reg, "controller_runtime_reconcile_total", "controller", "test", "result", "requeue")
		return ra == 1 && rq == 2, fmt.Sprintf("requeue_after %v requeue %v", ra, rq)
	})
}

func TestPanicsAreRecovered(t *testing.T) {
	var n calls
	reg := prometheus.NewRegistry()
	logs := &runtimetest.LogSink{}
	c := newController(t, controller.Func(func(_ context.Context, r request) (controller.Result, error) {
		if n.inc(r) == 1 {
			var m map[string]int
			m["boom"]++ // a nil map write: a runtime panic
		}
		return controller.Result{}, nil
	}), controller.Options{Registry: reg, Logger: logs.Logger()})
	run(t, c)
	c.Queue().Add(key("a"))
	n.waitFor(t, key("a"), 2) // retried after the panic
	c.Queue().Add(key("b"))
	n.waitFor(t, key("b"), 2) // the worker survived both
	if got := metric(t, reg, "controller_runtime_reconcile_panics_total", "controller", "test"); got != 2 {
		t.Fatalf("panics_total = %v, want 2", got)
	}
	if len(logs.Grep("recovered panic", "assignment to entry in nil map")) != 2 {
		t.Fatalf("panics not logged: %q", logs.Lines())
	}
}

// TestPanicsPropagateWithoutRecovery runs itself in a child process that
// must crash.
func TestPanicsPropagateWithoutRecovery(t *testing.T) {
	if os.Getenv("CAPSTAN_CONTROLLER_PANIC_CHILD") == "1" {
		f := false
		c, _ := controller.New("child", controller.Func(func(context.Context, request) (controller.Result, error) {
			panic("child panic")
		}), controller.Options{RecoverPanic: &f})
		c.Queue().Add(key("a"))
		_ = c.Start(context.Background())
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPanicsPropagateWithoutRecovery$")
	cmd.Env = append(os.Environ(), "CAPSTAN_CONTROLLER_PANIC_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "child panic") {
		t.Fatalf("child exited with %v, output:\n%s", err, out)
	}
}

func TestOneKeyIsNeverReconciledConcurrently(t *testing.T) {
	const workers, keys, target = 8, 3, 600
	var inFlight [keys]atomic.Int32
	var total, maxGlobal, global atomic.Int32
	var overlap atomic.Bool
	c := newController(t, controller.Func(func(_ context.Context, r request) (controller.Result, error) {
		var i int
		fmt.Sscanf(r.Name, "k%d", &i)
		if inFlight[i].Add(1) > 1 {
			overlap.Store(true)
		}
		g := global.Add(1)
		for {
			m := maxGlobal.Load()
			if g <= m || maxGlobal.CompareAndSwap(m, g) {
				break
			}
		}
		time.Sleep(100 * time.Microsecond) // widen the window for an overlap
		global.Add(-1)
		inFlight[i].Add(-1)
		total.Add(1)
		return controller.Result{}, nil
	}), controller.Options{MaxConcurrentReconciles: workers})
	stop := run(t, c)
	var wg sync.WaitGroup
	for a := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; total.Load() < target; i++ {
				c.Queue().Add(key(fmt.Sprintf("k%d", (i+a)%keys)))
				if i%keys == 0 {
					time.Sleep(10 * time.Microsecond)
				}
			}
		}()
	}
	wg.Wait()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if overlap.Load() {
		t.Fatal("one key was reconciled by two workers at once")
	}
	if maxGlobal.Load() < 2 {
		t.Fatalf("at most %d reconciles ran at once with %d workers and %d keys", maxGlobal.Load(), workers, keys)
	}
}

func TestMaxConcurrentReconcilesRunsInParallel(t *testing.T) {
	for _, workers := range []int{1, 4} {
		t.Run(fmt.Sprint(workers), func(t *testing.T) {
			var arrived, maxSeen, inFlight atomic.Int32
			all := make(chan struct{})
			var closeOnce sync.Once
			c := newController(t, controller.Func(func(ctx context.Context, r request) (controller.Result, error) {
				n := inFlight.Add(1)
				defer inFlight.Add(-1)
				for {
					m := maxSeen.Load()
					if n <= m || maxSeen.CompareAndSwap(m, n) {
						break
					}
				}
				if arrived.Add(1) == int32(workers) {
					closeOnce.Do(func() { close(all) })
				}
				// Every reconcile waits for workers of them to be in
				// flight together: only that many workers get there.
				select {
				case <-all:
				case <-time.After(runtimetest.Wait):
					return controller.Result{}, controller.TerminalError(errors.New("not enough parallelism"))
				}
				return controller.Result{}, nil
			}), controller.Options{MaxConcurrentReconciles: workers})
			run(t, c)
			for i := range 8 {
				c.Queue().Add(key(fmt.Sprint(i)))
			}
			runtimetest.Recv(t, all, fmt.Sprintf("%d reconciles in flight together", workers))
			runtimetest.Eventually(t, "all keys", func() (bool, string) { return arrived.Load() == 8, "" })
			if m := maxSeen.Load(); m > int32(workers) {
				t.Fatalf("%d reconciles in flight with %d workers", m, workers)
			}
		})
	}
}

func TestReconcileTimeout(t *testing.T) {
	const timeout = 50 * time.Millisecond
	type seen struct {
		deadlineIn time.Duration
		err        error
	}
	got := make(chan seen, 1)
	c := newController(t, controller.Func(func(ctx context.Context, r request) (controller.Result, error) {
		d, ok := ctx.Deadline()
		if !ok {
			got <- seen{err: errors.New("no deadline")}
			return controller.Result{}, nil
		}
		in := time.Until(d)
		<-ctx.Done()
		got <- seen{deadlineIn: in, err: ctx.Err()}
		return controller.Result{}, controller.TerminalError(ctx.Err())
	}), controller.Options{ReconcileTimeout: timeout})
	run(t, c)
	c.Queue().Add(key("a"))
	s := runtimetest.Recv(t, got, "the reconcile to time out")
	if !errors.Is(s.err, context.DeadlineExceeded) {
		t.Fatalf("reconcile context ended with %v, want DeadlineExceeded", s.err)
	}
	if s.deadlineIn > timeout {
		t.Fatalf("deadline %v away, want at most %v", s.deadlineIn, timeout)
	}

	// Without the option there is no deadline.
	c2 := newController(t, controller.Func(func(ctx context.Context, r request) (controller.Result, error) {
		if _, ok := ctx.Deadline(); ok {
			got <- seen{err: errors.New("unexpected deadline")}
		} else {
			got <- seen{}
		}
		return controller.Result{}, nil
	}), controller.Options{})
	run(t, c2)
	c2.Queue().Add(key("a"))
	if s := runtimetest.Recv(t, got, "the reconcile"); s.err != nil {
		t.Fatal(s.err)
	}
}

func TestFilterDropsKeys(t *testing.T) {
	var n calls
	lim := newSpyLimiter()
	c := newController(t, controller.Func(func(_ context.Context, r request) (controller.Result, error) {
		n.inc(r)
		return controller.Result{}, nil
	}), controller.Options{RateLimiter: lim, Filter: func(r request) bool { return !strings.HasPrefix(r.Name, "skip") }})
	run(t, c)
	c.Queue().Add(key("skip-1"))
	c.Queue().Add(key("keep"))
	c.Queue().Add(key("skip-2"))
	c.Queue().Add(key("sentinel"))
	n.waitFor(t, key("sentinel"), 1)
	if n.get(key("keep")) != 1 || n.get(key("skip-1")) != 0 || n.get(key("skip-2")) != 0 {
		t.Fatalf("reconciles: %v", n.n)
	}
	if _, f := lim.counts(key("skip-1")); f != 1 {
		t.Fatalf("a filtered key was forgotten %d times, want 1", f)
	}
}

func TestLoggerFromCarriesTheRequest(t *testing.T) {
	logs := &runtimetest.LogSink{}
	var n calls
	c := newController(t, controller.Func(func(ctx context.Context, r request) (controller.Result, error) {
		controller.LoggerFrom(ctx).Info("reconciling")
		n.inc(r)
		return controller.Result{}, nil
	}), controller.Options{Logger: logs.Logger()})
	run(t, c)
	c.Queue().Add(key("a"))
	c.Queue().Add(key("b"))
	n.waitFor(t, key("b"), 1)
	lines := logs.Grep(`"reconciling"`)
	if len(lines) != 2 {
		t.Fatalf("log lines %q", logs.Lines())
	}
	ids := map[string]bool{}
	for _, l := range lines {
		for _, want := range []string{`"controller"="test"`, `"namespace"="ns"`, `"reconcileID"=`} {
			if !strings.Contains(l, want) {
				t.Fatalf("line %q lacks %s", l, want)
			}
		}
		i := strings.Index(l, `"reconcileID"="`)
		ids[l[i:i+50]] = true
	}
	if len(ids) != 2 {
		t.Fatalf("reconcile IDs are not unique: %q", lines)
	}
	if !controller.LoggerFrom(context.Background()).IsZero() && controller.LoggerFrom(context.Background()).GetSink() != nil {
		controller.LoggerFrom(context.Background()).Info("a discarding logger must not panic")
	}
}

// TestShutdownWaitsForInFlightReconcilesOnly checks the graceful stop: a
// reconcile in flight finishes with a live context, and the keys still
// queued are left alone rather than reconciled during shutdown.
func TestShutdownWaitsForInFlightReconcilesOnly(t *testing.T) {
	var n calls
	started := make(chan struct{})
	release := make(chan struct{})
	ctxErr := make(chan error, 1)
	c := newController(t, controller.Func(func(ctx context.Context, r request) (controller.Result, error) {
		n.inc(r)
		if r.Name == "slow" {
			close(started)
			<-release
			ctxErr <- ctx.Err()
		}
		return controller.Result{}, nil
	}), controller.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	c.Queue().Add(key("slow"))
	for i := range 50 {
		c.Queue().Add(key(fmt.Sprint("queued-", i)))
	}
	go func() { done <- c.Start(ctx) }()
	runtimetest.Recv(t, started, "the slow reconcile to start")
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Start returned %v while a reconcile was in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := runtimetest.Recv(t, done, "Start to return"); err != nil {
		t.Fatalf("Start = %v, want nil", err)
	}
	if err := <-ctxErr; err != nil {
		t.Fatalf("the in-flight reconcile's context ended (%v) during a graceful stop", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.n) != 1 {
		t.Fatalf("%d keys reconciled after stop was requested, want only the in-flight one", len(n.n)-1)
	}
}

func TestStartErrors(t *testing.T) {
	r := controller.Func(func(context.Context, request) (controller.Result, error) { return controller.Result{}, nil })

	var n calls
	c := newController(t, controller.Func(func(_ context.Context, r request) (controller.Result, error) {
		n.inc(r)
		return controller.Result{}, nil
	}), controller.Options{})
	stop := run(t, c)
	c.Queue().Add(key("a"))
	n.waitFor(t, key("a"), 1) // started
	if err := c.Start(context.Background()); !errs.IsFailedPrecondition(err) {
		t.Fatalf("second Start: %v, want FailedPrecondition", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	c = newController(t, r, controller.Options{})
	if err := c.Watch(failingSource{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); !errs.IsUnavailable(err) {
		t.Fatalf("Start with a failing source: %v, want its Unavailable", err)
	}

	c = newController(t, r, controller.Options{CacheSyncTimeout: 20 * time.Millisecond})
	if err := c.Watch(neverSyncs{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); !errs.IsDeadlineExceeded(err) {
		t.Fatalf("Start with a source that never syncs: %v, want DeadlineExceeded", err)
	}

	// Stopping while waiting for a sync is a clean stop.
	c = newController(t, r, controller.Options{})
	if err := c.Watch(neverSyncs{}); err != nil {
		t.Fatal(err)
	}
	if err := run(t, c)(); err != nil {
		t.Fatalf("stop during the sync wait: %v, want nil", err)
	}
}

type failingSource struct{}

func (failingSource) Start(context.Context, source.Queue) error {
	return errs.New(errs.Unavailable, "no store")
}

type neverSyncs struct{}

func (neverSyncs) Start(context.Context, source.Queue) error { return nil }
func (neverSyncs) WaitForSync(ctx context.Context) error {
	<-ctx.Done()
	return errs.Wrap(errs.DeadlineExceeded, ctx.Err(), "never")
}

func TestWatchAfterStartStartsTheSource(t *testing.T) {
	var n calls
	c := newController(t, controller.Func(func(_ context.Context, r request) (controller.Result, error) {
		n.inc(r)
		return controller.Result{}, nil
	}), controller.Options{})
	run(t, c)
	c.Queue().Add(key("a"))
	n.waitFor(t, key("a"), 1) // started
	ch := make(chan source.GenericEvent, 1)
	if err := c.Watch(source.Channel(ch, enqueueObject{})); err != nil {
		t.Fatal(err)
	}
	ch <- source.GenericEvent{Object: runtimetest.NewWidget("ns", "late", 0)}
	n.waitFor(t, key("late"), 1)
}

// enqueueObject is a minimal handler (the handler package imports this
// one's callers, not the other way round).
type enqueueObject struct{}

func (enqueueObject) Create(_ context.Context, e source.CreateEvent, q source.Queue) {
	q.Add(meta.KeyOf(e.Object))
}
func (enqueueObject) Update(_ context.Context, e source.UpdateEvent, q source.Queue) {
	q.Add(meta.KeyOf(e.ObjectNew))
}
func (enqueueObject) Delete(_ context.Context, e source.DeleteEvent, q source.Queue) {
	q.Add(meta.KeyOf(e.Object))
}
func (enqueueObject) Generic(_ context.Context, e source.GenericEvent, q source.Queue) {
	q.Add(meta.KeyOf(e.Object))
}

func TestMetricsAfterReconciles(t *testing.T) {
	reg := prometheus.NewRegistry()
	var n calls
	mk := func(name string) *controller.Controller {
		c, err := controller.New(name, controller.Func(func(_ context.Context, r request) (controller.Result, error) {
			n.inc(r)
			return controller.Result{}, nil
		}), controller.Options{Registry: reg, MaxConcurrentReconciles: 3})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// Two controllers share one registry without a registration clash.
	one, two := mk("one"), mk("two")
	run(t, one)
	run(t, two)
	for i := range 5 {
		one.Queue().Add(key(fmt.Sprint("one-", i)))
	}
	two.Queue().Add(key("two-0"))
	n.waitFor(t, key("one-4"), 1)
	n.waitFor(t, key("two-0"), 1)
	runtimetest.Eventually(t, "metrics", func() (bool, string) {
		s1 := metric(t, reg, "controller_runtime_reconcile_total", "controller", "one", "result", "success")
		s2 := metric(t, reg, "controller_runtime_reconcile_total", "controller", "two", "result", "success")
		return s1 == 5 && s2 == 1, fmt.Sprint(s1, s2)
	})
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"controller_runtime_max_concurrent_reconciles", []string{"controller", "one"}, 3},
		{"controller_runtime_active_workers", []string{"controller", "one"}, 0},
		{"controller_runtime_reconcile_time_seconds", []string{"controller", "one"}, 5},
		{"workqueue_adds_total", []string{"name", "one", "controller", "one"}, 5},
		{"workqueue_depth", []string{"name", "one"}, 0},
		{"workqueue_queue_duration_seconds", []string{"name", "one"}, 5},
		{"workqueue_work_duration_seconds", []string{"name", "two"}, 1},
	} {
		if got := metric(t, reg, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}
