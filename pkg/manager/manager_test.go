package manager_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/store"
)

// events is an ordered log of what runnables and the store saw.
type events struct {
	mu    sync.Mutex
	lines []string
}

func (e *events) add(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lines = append(e.lines, fmt.Sprintf(format, args...))
}

func (e *events) get() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.lines...)
}

func (e *events) index(line string) int { return slices.Index(e.get(), line) }

func (e *events) wait(t *testing.T, line string) {
	t.Helper()
	runtimetest.Eventually(t, line, func() (bool, string) {
		return e.index(line) >= 0, strings.Join(e.get(), "; ")
	})
}

// gatedStore holds every List until open is closed, and logs when the
// cache's watches end.
type gatedStore struct {
	store.Store
	open chan struct{}
	log  *events
}

func (g *gatedStore) List(ctx context.Context, kind string, opts store.ListOptions) (*store.ListResult, error) {
	select {
	case <-g.open:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Store.List(ctx, kind, opts)
}

func (g *gatedStore) Watch(ctx context.Context, kind string, opts store.WatchOptions) (<-chan store.Event, error) {
	ch, err := g.Store.Watch(ctx, kind, opts)
	if err == nil {
		go func() { <-ctx.Done(); g.log.add("cache stopped") }()
	}
	return ch, err
}

// probe returns the status of GET url, or 0 if nothing answers.
func probe(url string) (int, string) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// logRunnable logs its start and stop, and runs check when asked to stop.
type logRunnable struct {
	name    string
	log     *events
	elected *bool // NeedLeaderElection; nil: does not implement it
	onStart func()
	onStop  func()
}

func (r *logRunnable) Start(ctx context.Context) error {
	r.log.add("%s started", r.name)
	if r.onStart != nil {
		r.onStart()
	}
	<-ctx.Done()
	if r.onStop != nil {
		r.onStop()
	}
	r.log.add("%s stopped", r.name)
	return nil
}

type electedRunnable struct{ *logRunnable }

func (r electedRunnable) NeedLeaderElection() bool { return *r.elected }

func runnable(name string, log *events, needLeader *bool) manager.Runnable {
	r := &logRunnable{name: name, log: log, elected: needLeader}
	if needLeader == nil {
		return r
	}
	return electedRunnable{r}
}

func ptr[T any](v T) *T { return &v }

func newManager(t *testing.T, st store.Store, opts manager.Options) *manager.Manager {
	t.Helper()
	opts.Store = st
	m, err := manager.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestNewValidates(t *testing.T) {
	if _, err := manager.New(manager.Options{}); !errs.IsInvalidArgument(err) {
		t.Fatalf("no store: %v, want InvalidArgument", err)
	}
	st := runtimetest.Memory(t, runtimetest.NewScheme())
	if _, err := manager.New(manager.Options{Store: st, LeaderElection: true}); !errs.IsInvalidArgument(err) {
		t.Fatalf("leader election without an elector: %v, want InvalidArgument", err)
	}
	m, err := manager.New(manager.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if m.Store() != st || m.Cache() == nil || m.Registry() == nil || m.Addr("metrics") != "" {
		t.Fatal("accessors are wrong before start")
	}
}

// TestStartAndStopOrder checks the groups' order: servers, then caches
// (and their sync), then other runnables, then leader-elected ones; and
// the reverse on stop, each group waiting for the one before.
func TestStartAndStopOrder(t *testing.T) {
	runtimetest.CheckLeaks(t)
	log := &events{}
	gs := &gatedStore{Store: runtimetest.Memory(t, runtimetest.NewScheme()), open: make(chan struct{}), log: log}
	m := newManager(t, gs, manager.Options{HealthProbeBindAddress: "127.0.0.1:0"})
	if _, err := m.Cache().Informer(runtimetest.WidgetKind); err != nil {
		t.Fatal(err)
	}
	var healthURL string
	other := &logRunnable{name: "other", log: log, elected: ptr(false)}
	other.onStart = func() { log.add("other sees synced=%v", m.Cache().HasSynced()) }
	other.onStop = func() {
		// The elected group is gone, the cache and the servers still run.
		code, _ := probe(healthURL)
		log.add("other stopping: health %d", code)
	}
	elected := &logRunnable{name: "elected", log: log, elected: ptr(true)}
	plain := &logRunnable{name: "plain", log: log} // no NeedLeaderElection: elected
	for _, r := range []manager.Runnable{electedRunnable{other}, electedRunnable{elected}, plain} {
		if err := m.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	stop := runtimetest.Start(t, m)

	// While the cache cannot list, the probe server runs and nothing else.
	runtimetest.Eventually(t, "the health server", func() (bool, string) {
		healthURL = "http://" + m.Addr("health") + "/healthz"
		code, body := probe(healthURL)
		return code == http.StatusOK, body
	})
	select {
	case <-m.Elected():
		t.Fatal("elected before the caches synced")
	default:
	}
	if got := log.get(); len(got) != 0 {
		t.Fatalf("runnables started before the caches synced: %q", got)
	}
	close(gs.open)
	log.wait(t, "elected started")
	log.wait(t, "plain started")
	runtimetest.Recv(t, m.Elected(), "Elected to close without leader election")
	// Runnables of one start step begin concurrently, so their logs may
	// interleave; what matters is that each saw the caches synced.
	log.wait(t, "other sees synced=true")

	// A runnable added now starts at once in its group.
	late := &logRunnable{name: "late", log: log, elected: ptr(false)}
	if err := m.Add(electedRunnable{late}); err != nil {
		t.Fatal(err)
	}
	log.wait(t, "late started")

	if err := stop(); err != nil {
		t.Fatalf("Start = %v, want nil", err)
	}
	got := log.get()
	at := func(s string) int {
		i := slices.Index(got, s)
		if i < 0 {
			t.Fatalf("%q missing from %q", s, got)
		}
		return i
	}
	if !(at("elected stopped") < at("other stopping: health 200") && at("plain stopped") < at("other stopping: health 200") &&
		at("other stopped") < at("cache stopped") && at("late stopped") < at("cache stopped")) {
		t.Fatalf("stop order: %q", got)
	}
	if code, _ := probe(healthURL); code != 0 {
		t.Fatalf("health server still answers (%d) after Start returned", code)
	}
}

// fakeElector grants and revokes leadership when the test says.
type fakeElector struct {
	grant chan struct{}
	lose  chan error
	ran   chan struct{}
}

func newFakeElector() *fakeElector {
	return &fakeElector{grant: make(chan struct{}), lose: make(chan error, 1), ran: make(chan struct{}, 1)}
}

func (f *fakeElector) Run(ctx context.Context, onStarted func(ctx context.Context)) error {
	f.ran <- struct{}{}
	select {
	case <-f.grant:
	case <-ctx.Done():
		return nil
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go onStarted(lctx)
	select {
	case err := <-f.lose:
		return err
	case <-ctx.Done():
		return nil
	}
}

func TestLeaderElection(t *testing.T) {
	runtimetest.CheckLeaks(t)
	log := &events{}
	le := newFakeElector()
	m := newManager(t, runtimetest.Memory(t, runtimetest.NewScheme()), manager.Options{
		LeaderElection: true, LeaderElector: le, GracefulShutdownTimeout: runtimetest.Wait,
	})
	for _, r := range []manager.Runnable{runnable("other", log, ptr(false)), runnable("elected", log, ptr(true))} {
		if err := m.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- m.Start(context.Background()) }()
	runtimetest.Recv(t, le.ran, "the elector to campaign")
	log.wait(t, "other started")
	// An elected runnable added while campaigning waits for leadership.
	if err := m.Add(runnable("elected-early", log, ptr(true))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Elected():
		t.Fatal("Elected closed before leadership was granted")
	default:
	}
	if got := log.get(); slices.Contains(got, "elected started") || slices.Contains(got, "elected-early started") {
		t.Fatalf("elected runnables started without leadership: %q", got)
	}

	close(le.grant)
	runtimetest.Recv(t, m.Elected(), "Elected to close once leading")
	log.wait(t, "elected started")
	log.wait(t, "elected-early started")
	if err := m.Add(runnable("elected-late", log, ptr(true))); err != nil {
		t.Fatal(err)
	}
	log.wait(t, "elected-late started")

	le.lose <- errors.New("lease taken over")
	err := runtimetest.Recv(t, done, "Start to return after leadership was lost")
	if err == nil || !strings.Contains(err.Error(), "lease taken over") || !errs.IsAborted(err) {
		t.Fatalf("Start = %v, want an Aborted error about the lost lease", err)
	}
	got := log.get()
	for _, n := range []string{"elected", "elected-early", "elected-late", "other"} {
		if !slices.Contains(got, n+" stopped") {
			t.Fatalf("%s was not stopped: %q", n, got)
		}
	}
	if slices.Index(got, "other stopped") < slices.Index(got, "elected stopped") {
		t.Fatalf("others stopped before the elected runnables: %q", got)
	}
}

func TestLeaderElectionCleanStop(t *testing.T) {
	runtimetest.CheckLeaks(t)
	le := newFakeElector()
	m := newManager(t, runtimetest.Memory(t, runtimetest.NewScheme()), manager.Options{LeaderElection: true, LeaderElector: le})
	stop := runtimetest.Start(t, m)
	runtimetest.Recv(t, le.ran, "the elector to campaign")
	close(le.grant)
	runtimetest.Recv(t, m.Elected(), "leadership")
	if err := stop(); err != nil {
		t.Fatalf("Start = %v after a clean stop, want nil", err)
	}
}

// stubborn ignores its context until released.
type stubborn struct{ release chan struct{} }

func (s stubborn) Start(ctx context.Context) error {
	<-ctx.Done()
	<-s.release
	return nil
}

func TestGracefulShutdownTimeout(t *testing.T) {
	runtimetest.CheckLeaks(t)
	st := runtimetest.Memory(t, runtimetest.NewScheme())
	s := stubborn{release: make(chan struct{})}
	defer close(s.release)
	m := newManager(t, st, manager.Options{GracefulShutdownTimeout: 50 * time.Millisecond})
	if err := m.Add(s); err != nil {
		t.Fatal(err)
	}
	stop := runtimetest.Start(t, m)
	runtimetest.Recv(t, m.Elected(), "start")
	if err := stop(); !errs.IsDeadlineExceeded(err) {
		t.Fatalf("Start = %v, want DeadlineExceeded from a runnable that ignores the stop", err)
	}
}

func TestGracefulShutdownWithoutTimeoutWaits(t *testing.T) {
	runtimetest.CheckLeaks(t)
	st := runtimetest.Memory(t, runtimetest.NewScheme())
	s := stubborn{release: make(chan struct{})}
	m := newManager(t, st, manager.Options{GracefulShutdownTimeout: -1})
	if err := m.Add(s); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Start(ctx) }()
	runtimetest.Recv(t, m.Elected(), "start")
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Start returned %v before the runnable stopped", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(s.release)
	if err := runtimetest.Recv(t, done, "Start to return"); err != nil {
		t.Fatalf("Start = %v, want nil", err)
	}
}

func TestRunnableErrorStopsTheManager(t *testing.T) {
	runtimetest.CheckLeaks(t)
	log := &events{}
	m := newManager(t, runtimetest.Memory(t, runtimetest.NewScheme()), manager.Options{})
	boom := errs.New(errs.Internal, "boom")
	failing := manager.RunnableFunc(func(ctx context.Context) error {
		log.wait(t, "bystander started")
		return boom
	})
	for _, r := range []manager.Runnable{runnable("bystander", log, ptr(false)), failing} {
		if err := m.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- m.Start(context.Background()) }()
	if err := runtimetest.Recv(t, done, "Start to return"); !errors.Is(err, boom) {
		t.Fatalf("Start = %v, want the runnable's error", err)
	}
	if !slices.Contains(log.get(), "bystander stopped") {
		t.Fatal("the other runnables were not stopped")
	}
}

// failingLists refuses to list one kind, as a store does for a kind it
// does not know: the cache fails for good.
type failingLists struct {
	store.Store
	kind string
}

func (f failingLists) List(ctx context.Context, kind string, opts store.ListOptions) (*store.ListResult, error) {
	if kind == f.kind {
		return nil, errs.Invalid("kind", "unknown kind %q", kind)
	}
	return f.Store.List(ctx, kind, opts)
}

func TestCacheFailureDuringSyncStopsTheManager(t *testing.T) {
	runtimetest.CheckLeaks(t)
	st := failingLists{Store: runtimetest.Memory(t, runtimetest.NewScheme()), kind: runtimetest.GadgetKind}
	m := newManager(t, st, manager.Options{})
	if _, err := m.Cache().Informer(runtimetest.GadgetKind); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Start(context.Background()) }()
	if err := runtimetest.Recv(t, done, "Start to return the cache's error"); !errs.IsInvalidArgument(err) {
		t.Fatalf("Start = %v, want the cache's InvalidArgument", err)
	}
}

func TestStopDuringCacheSyncIsClean(t *testing.T) {
	runtimetest.CheckLeaks(t)
	gs := &gatedStore{Store: runtimetest.Memory(t, runtimetest.NewScheme()), open: make(chan struct{}), log: &events{}}
	m := newManager(t, gs, manager.Options{})
	if _, err := m.Cache().Informer(runtimetest.WidgetKind); err != nil {
		t.Fatal(err)
	}
	stop := runtimetest.Start(t, m)
	if err := stop(); err != nil {
		t.Fatalf("stopping while the caches sync: %v, want nil", err)
	}
}

func TestStartErrors(t *testing.T) {
	runtimetest.CheckLeaks(t)
	st := runtimetest.Memory(t, runtimetest.NewScheme())
	m := newManager(t, st, manager.Options{})
	stop := runtimetest.Start(t, m)
	runtimetest.Recv(t, m.Elected(), "start")
	if err := m.Start(context.Background()); !errs.IsFailedPrecondition(err) {
		t.Fatalf("second Start: %v, want FailedPrecondition", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{}, 2)
	for _, leader := range []bool{false, true} {
		r := electedRunnable{&logRunnable{name: "too-late", log: &events{}, elected: ptr(leader), onStart: func() { ran <- struct{}{} }}}
		if err := m.Add(r); !errs.IsFailedPrecondition(err) {
			t.Fatalf("Add after stop (leader-elected %v): %v, want FailedPrecondition", leader, err)
		}
	}
	select {
	case <-ran:
		t.Fatal("a runnable added after stop ran")
	default:
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	m = newManager(t, st, manager.Options{MetricsBindAddress: ln.Addr().String()})
	// A controller that never starts leaves nothing running (goleak checks
	// the package at the end).
	c, err := controller.New("never-started", controller.Func(func(context.Context, controller.Request) (controller.Result, error) {
		return controller.Result{}, nil
	}), controller.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Add(c); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); !errs.IsUnavailable(err) {
		t.Fatalf("Start on a taken address: %v, want Unavailable", err)
	}
}

func TestProbes(t *testing.T) {
	runtimetest.CheckLeaks(t)
	gs := &gatedStore{Store: runtimetest.Memory(t, runtimetest.NewScheme()), open: make(chan struct{}), log: &events{}}
	m := newManager(t, gs, manager.Options{HealthProbeBindAddress: "127.0.0.1:0", PprofBindAddress: "127.0.0.1:0"})
	if _, err := m.Cache().Informer(runtimetest.WidgetKind); err != nil {
		t.Fatal(err)
	}
	var sick sync.Mutex
	healthy := true
	if err := m.AddHealthzCheck("custom", func(*http.Request) error {
		sick.Lock()
		defer sick.Unlock()
		if !healthy {
			return errors.New("custom is sick")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := m.AddHealthzCheck("custom", nil); !errs.IsAlreadyExists(err) {
		t.Fatalf("duplicate check: %v, want AlreadyExists", err)
	}
	if err := m.AddReadyzCheck("extra", func(*http.Request) error { return nil }); err != nil {
		t.Fatal(err)
	}
	runtimetest.Start(t, m)
	var base string
	runtimetest.Eventually(t, "the probe server", func() (bool, string) {
		base = "http://" + m.Addr("health")
		code, body := probe(base + "/healthz")
		return code == http.StatusOK, body
	})
	code, body := probe(base + "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "[-]cache-sync failed") || !strings.Contains(body, "[+]extra ok") {
		t.Fatalf("readyz before sync: %d %q, want 503 naming cache-sync", code, body)
	}
	close(gs.open)
	runtimetest.Eventually(t, "ready after the caches synced", func() (bool, string) {
		code, body := probe(base + "/readyz")
		return code == http.StatusOK, body
	})
	sick.Lock()
	healthy = false
	sick.Unlock()
	code, body = probe(base + "/healthz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "[-]custom failed: custom is sick") {
		t.Fatalf("healthz with a failing check: %d %q", code, body)
	}
	if code, _ := probe("http://" + m.Addr("pprof") + "/debug/pprof/"); code != http.StatusOK {
		t.Fatalf("pprof index: %d", code)
	}
	if m.Addr("metrics") != "" {
		t.Fatal("metrics server runs although it was not asked for")
	}
}

// TestSignalHandler runs itself in a child process: the first SIGTERM
// cancels the context, the second exits with status 1.
func TestSignalHandler(t *testing.T) {
	if os.Getenv("CAPSTAN_MANAGER_SIGNAL_CHILD") == "1" {
		ctx := manager.SetupSignalHandler()
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		select {
		case <-ctx.Done():
			fmt.Println("context cancelled")
		case <-time.After(runtimetest.Wait):
			fmt.Println("context not cancelled")
			os.Exit(3)
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		time.Sleep(runtimetest.Wait)
		fmt.Println("still alive after the second signal")
		os.Exit(4)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSignalHandler$")
	cmd.Env = append(os.Environ(), "CAPSTAN_MANAGER_SIGNAL_CHILD=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "context cancelled") {
		t.Fatalf("child: %v, output:\n%s", err, out)
	}
}

// lateElector reports leadership only after it already lost it, as a slow
// onStarted goroutine of a real elector can: once after is closed, and it
// closes done when onStarted returned.
type lateElector struct{ after, done chan struct{} }

func (l lateElector) Run(ctx context.Context, onStarted func(ctx context.Context)) error {
	go func() {
		<-l.after
		onStarted(context.Background())
		close(l.done)
	}()
	return errors.New("lost at once")
}

func TestLeadershipReportedAfterTheLossIsIgnored(t *testing.T) {
	runtimetest.CheckLeaks(t)
	log := &events{}
	le := lateElector{after: make(chan struct{}), done: make(chan struct{})}
	m := newManager(t, runtimetest.Memory(t, runtimetest.NewScheme()), manager.Options{LeaderElection: true, LeaderElector: le})
	if err := m.Add(runnable("elected", log, ptr(true))); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err == nil {
		t.Fatal("Start = nil after leadership was lost")
	}
	close(le.after)
	runtimetest.Recv(t, le.done, "the late onStarted to return")
	select {
	case <-m.Elected():
		t.Fatal("Elected closed after the manager stopped")
	default:
	}
	if got := log.get(); len(got) != 0 {
		t.Fatalf("elected runnables ran after the manager stopped: %q", got)
	}
}
