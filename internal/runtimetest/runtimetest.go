// Package runtimetest holds what the runtime's tests (pkg/source,
// pkg/controller, pkg/manager) share: small resource kinds, stores of every
// backend over them, and helpers that wait on conditions with generous
// deadlines instead of sleeping.
package runtimetest

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/memory"
)

// Kind names registered by NewScheme.
const (
	// WidgetKind is namespaced and typed (*Widget).
	WidgetKind = "Widget"
	// GadgetKind is namespaced and typed (*Gadget); tests use it for
	// dependents of Widgets, and of other Gadgets.
	GadgetKind = "Gadget"
	// RackKind is cluster-scoped and typed (*Rack).
	RackKind = "Rack"
	// DoodadKind is namespaced and known only as *meta.Unstructured.
	DoodadKind = "Doodad"
)

// Wait is how long tests wait for a condition that should hold soon. It is
// generous: the embedded server's oplog watch has a p99 latency of about
// 260 ms under -race on a busy machine.
const Wait = 30 * time.Second

// Widget is the kind most tests reconcile.
type Widget struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec is the desired state.
	Spec WidgetSpec `json:"spec"`
	// Status is the observed state.
	Status WidgetStatus `json:"status"`
}

// WidgetSpec is a Widget's desired state.
type WidgetSpec struct {
	// Size is a number tests change to make updates.
	Size int `json:"size"`
	// Color is a free string.
	Color string `json:"color,omitempty"`
	// Tags is a slice, to check that copies do not share it.
	Tags []string `json:"tags,omitempty"`
}

// WidgetStatus is a Widget's observed state.
type WidgetStatus struct {
	// ObservedSize is the Size a reconciler last saw.
	ObservedSize int `json:"observedSize,omitempty"`
	// Phase is a free string.
	Phase string `json:"phase,omitempty"`
}

// Gadget is a kind that tests use as a dependent.
type Gadget struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec is the desired state.
	Spec GadgetSpec `json:"spec"`
}

// GadgetSpec is a Gadget's desired state.
type GadgetSpec struct {
	// Note is a free string.
	Note string `json:"note,omitempty"`
}

// Rack is a cluster-scoped kind.
type Rack struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec is the desired state.
	Spec RackSpec `json:"spec"`
}

// RackSpec is a Rack's desired state.
type RackSpec struct {
	// Slots is a number.
	Slots int `json:"slots"`
}

// NewScheme returns a scheme with Widget, Gadget, Rack and Doodad.
func NewScheme() *store.Scheme {
	s := store.NewScheme()
	store.MustRegister[Widget](s, WidgetKind)
	store.MustRegister[Gadget](s, GadgetKind)
	store.MustRegister[Rack](s, RackKind, store.ClusterScoped())
	if _, err := s.RegisterUnstructured(DoodadKind); err != nil {
		panic(err)
	}
	return s
}

// NewDoodad returns an unsaved Doodad with a spec.
func NewDoodad(namespace, name string, spec map[string]any) *meta.Unstructured {
	u := &meta.Unstructured{Kind: DoodadKind, ObjectMeta: meta.ObjectMeta{Namespace: namespace, Name: name}}
	u.SetField("spec", spec)
	return u
}

// NewWidget returns an unsaved Widget.
func NewWidget(namespace, name string, size int) *Widget {
	return &Widget{ObjectMeta: meta.ObjectMeta{Namespace: namespace, Name: name}, Spec: WidgetSpec{Size: size}}
}

// NewGadget returns an unsaved Gadget.
func NewGadget(namespace, name string) *Gadget {
	return &Gadget{ObjectMeta: meta.ObjectMeta{Namespace: namespace, Name: name}}
}

// Memory returns a memory store over scheme that is closed when the test
// ends.
func Memory(t testing.TB, scheme *store.Scheme, opts ...memory.Option) *memory.Store {
	t.Helper()
	st := memory.New(scheme, opts...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), Wait)
		defer cancel()
		if err := st.Close(ctx); err != nil {
			t.Errorf("close memory store: %v", err)
		}
	})
	return st
}

// Backend makes stores of one kind for a test.
type Backend struct {
	// Name names the backend in subtests ("memory", "mongo").
	Name string
	// New returns an empty store over scheme, closed when the test ends.
	New func(t testing.TB, scheme *store.Scheme) store.Store
	// Warm, if set, starts what the backend shares between tests (a test
	// server and its client), so that CheckLeaks does not count it.
	Warm func(t testing.TB)
}

// CheckLeaks is CheckLeaks after warming the backend up.
func (b Backend) CheckLeaks(t testing.TB) {
	t.Helper()
	if b.Warm != nil {
		b.Warm(t)
	}
	CheckLeaks(t)
}

// MemoryBackend is the memory store as a Backend.
var MemoryBackend = Backend{Name: "memory", New: func(t testing.TB, s *store.Scheme) store.Store { return Memory(t, s) }}

// Context returns a context cancelled when the test ends.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

// Eventually polls cond until it returns true or Wait passes, then fails
// the test with what cond last said. It never treats time as the thing
// under test: the deadline only bounds a wait for a condition.
func Eventually(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	EventuallyWithin(t, Wait, what, cond)
}

// EventuallyWithin is Eventually with an explicit deadline.
func EventuallyWithin(t testing.TB, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	delay := time.Millisecond
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", d, what, msg)
		}
		time.Sleep(delay)
		delay = min(delay*2, 50*time.Millisecond)
	}
}

// Recv receives from ch within Wait or fails the test.
func Recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(Wait):
		t.Fatalf("timed out after %v waiting for %s", Wait, what)
		panic("unreachable")
	}
}

// LogSink collects log lines so that tests can assert on them; it is safe
// for concurrent use and never writes to the test's log (goroutines may
// log after the test ends).
type LogSink struct {
	mu    sync.Mutex
	lines []string
}

// Logger returns a logger that writes into s, at every verbosity.
func (s *LogSink) Logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.lines = append(s.lines, strings.TrimSpace(prefix+" "+args))
	}, funcr.Options{Verbosity: 10})
}

// Lines returns the lines logged so far.
func (s *LogSink) Lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// Grep returns the logged lines that contain every one of subs.
func (s *LogSink) Grep(subs ...string) []string {
	var out []string
	for _, l := range s.Lines() {
		ok := true
		for _, sub := range subs {
			if !strings.Contains(l, sub) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// Keys formats keys for messages.
func Keys(keys []meta.Key) string {
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k.String()
	}
	return fmt.Sprintf("[%s]", strings.Join(parts, " "))
}

// Starter is anything with a blocking Start: a manager, a controller, a
// cache.
type Starter interface {
	Start(ctx context.Context) error
}

// Start runs s.Start in a goroutine and returns a function that cancels
// its context and returns what Start returned (waiting at most Wait). If
// the test did not call stop, its cleanup does and fails the test on an
// error.
func Start(t testing.TB, s Starter) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	var once sync.Once
	var err error
	stopped := false
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(Wait):
				err = fmt.Errorf("Start did not return within %v of the cancel", Wait)
			}
		})
		return err
	}
	t.Cleanup(func() {
		if stopped {
			return
		}
		if err := stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return func() error {
		stopped = true
		return stop()
	}
}

// CheckLeaks fails the test if goroutines that started after this call
// still run once the cleanups registered after it are done (cleanups run
// last-in first-out, so call it before starting anything). It is for
// packages whose TestMain cannot use goleak.VerifyTestMain because it
// runs mongotest.Main. Goroutines of a MongoDB-wire server running inside
// the test binary (the embedded FerretDB, its SQLite, its front) are not
// the runtime's and are not counted: that server serves every test of the
// binary and works on its own schedule.
func CheckLeaks(t testing.TB) {
	t.Helper()
	before := goroutines()
	t.Cleanup(func() {
		var leaked []string
		deadline := time.Now().Add(leakWait)
		for {
			leaked = leaked[:0]
			for id, stack := range goroutines() {
				if _, old := before[id]; !old && !serverSide(stack) {
					leaked = append(leaked, stack)
				}
			}
			if len(leaked) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(leaked) > 0 {
			t.Errorf("%d goroutines leaked:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
	})
}

// leakWait is how long CheckLeaks waits for goroutines to end.
var leakWait = 10 * time.Second

// serverSideMarks identify the stacks of an in-process test server.
var serverSideMarks = []string{
	"github.com/FerretDB/",
	"modernc.org/",
	"github.com/capstanhq/capstan/pkg/store/embedded.",
	"database/sql.",
}

func serverSide(stack string) bool {
	for _, m := range serverSideMarks {
		if strings.Contains(stack, m) {
			return true
		}
	}
	return false
}

// goroutines returns the stack of every goroutine by its id.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, "\n") // "goroutine 12 [select]:"
		if f := strings.Fields(header); len(f) >= 2 && f[0] == "goroutine" {
			out[f[1]] = g
		}
	}
	return out
}
