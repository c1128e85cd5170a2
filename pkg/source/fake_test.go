package source_test

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// fakeLW is a ListWatcher that the test drives: List returns the objects
// set with setState (paged), and every Watch call hands the test a
// fakeWatch to push events into. Errors can be queued for the next calls.
type fakeLW struct {
	t        *testing.T
	mu       sync.Mutex
	objs     map[meta.Key]meta.Object
	rev      string
	lists    []store.ListOptions
	listErr  []error
	watchErr []error
	watches  chan *fakeWatch
	gets     int
	getErr   error
}

type fakeWatch struct {
	opts store.WatchOptions
	ctx  context.Context
	ch   chan store.Event
}

func newFakeLW(t *testing.T) *fakeLW {
	return &fakeLW{t: t, objs: map[meta.Key]meta.Object{}, watches: make(chan *fakeWatch, 16)}
}

// setState replaces what List returns.
func (f *fakeLW) setState(rev string, objs ...meta.Object) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev = rev
	f.objs = map[meta.Key]meta.Object{}
	for _, o := range objs {
		f.objs[meta.KeyOf(o)] = o
	}
}

func (f *fakeLW) failNextList(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listErr = append(f.listErr, err)
}

func (f *fakeLW) failNextWatch(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchErr = append(f.watchErr, err)
}

func (f *fakeLW) listCalls() []store.ListOptions {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]store.ListOptions(nil), f.lists...)
}

func (f *fakeLW) Get(ctx context.Context, key meta.Key, obj meta.Object) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets++
	if f.getErr != nil {
		return f.getErr
	}
	o, ok := f.objs[key]
	if !ok {
		return errs.New(errs.NotFound, "%s not found", key)
	}
	meta.CopyInto(obj, o)
	return nil
}

func (f *fakeLW) getCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gets
}

func (f *fakeLW) List(ctx context.Context, kind string, opts store.ListOptions) (*store.ListResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists = append(f.lists, opts)
	if len(f.listErr) > 0 {
		err := f.listErr[0]
		f.listErr = f.listErr[1:]
		return nil, err
	}
	keys := make([]meta.Key, 0, len(f.objs))
	for k, o := range f.objs {
		if opts.Namespace != "" && k.Namespace != opts.Namespace {
			continue
		}
		_ = o
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	start := 0
	if opts.Continue != "" {
		n, err := strconv.Atoi(opts.Continue)
		if err != nil {
			return nil, errs.Invalid("continue", "bad token")
		}
		start = n
	}
	end := len(keys)
	res := &store.ListResult{Revision: f.rev}
	if opts.Limit > 0 && start+int(opts.Limit) < end {
		end = start + int(opts.Limit)
		res.Continue = strconv.Itoa(end)
		// Later pages must not change the revision the informer resumes
		// from: report a different one to catch that.
		if start > 0 {
			res.Revision = "page-" + res.Continue
		}
	} else if start > 0 {
		res.Revision = "last-page"
	}
	for _, k := range keys[start:end] {
		if opts.Selector == nil || opts.Selector.Matches(labelSet(f.objs[k])) {
			res.Items = append(res.Items, meta.DeepCopy(f.objs[k]))
		}
	}
	return res, nil
}

func (f *fakeLW) Watch(ctx context.Context, kind string, opts store.WatchOptions) (<-chan store.Event, error) {
	f.mu.Lock()
	if len(f.watchErr) > 0 {
		err := f.watchErr[0]
		f.watchErr = f.watchErr[1:]
		f.mu.Unlock()
		return nil, err
	}
	f.mu.Unlock()
	w := &fakeWatch{opts: opts, ctx: ctx, ch: make(chan store.Event)}
	f.watches <- w
	return w.ch, nil
}

// nextWatch returns the informer's next Watch call.
func (f *fakeLW) nextWatch() *fakeWatch {
	f.t.Helper()
	return runtimetest.Recv(f.t, f.watches, "the informer's next Watch call")
}

// send delivers ev; it fails the test if the informer does not take it.
func (w *fakeWatch) send(t *testing.T, evs ...store.Event) {
	t.Helper()
	for _, ev := range evs {
		select {
		case w.ch <- ev:
		case <-w.ctx.Done():
			t.Fatalf("watch ended before it took %s %v", ev.Type, ev.Object)
		case <-time.After(runtimetest.Wait):
			t.Fatalf("informer did not take %s %v", ev.Type, ev.Object)
		}
	}
}

// waitCancelled waits until the informer abandoned this watch.
func (w *fakeWatch) waitCancelled(t *testing.T) {
	t.Helper()
	select {
	case <-w.ctx.Done():
	case <-time.After(runtimetest.Wait):
		t.Fatal("informer did not cancel its watch")
	}
}

// widget returns a Widget with the store-owned fields set as a backend
// would.
func widget(name, uid string, rv int, size int) *runtimetest.Widget {
	w := runtimetest.NewWidget("ns", name, size)
	w.UID = uid
	w.ResourceVersion = strconv.Itoa(rv)
	w.Generation = 1
	return w
}

func ev(typ store.EventType, obj meta.Object, rev int) store.Event {
	return store.Event{Type: typ, Object: obj, Revision: strconv.Itoa(rev)}
}

// recorder is a ResourceEventHandler that writes each call as a line and
// checks that calls never overlap.
type recorder struct {
	mu       sync.Mutex
	lines    []string
	inFlight int
	overlap  bool
	onEvent  func()
}

func describe(obj meta.Object) string {
	m := obj.GetObjectMeta()
	s := fmt.Sprintf("%s@%s", m.Key(), m.ResourceVersion)
	if w, ok := obj.(*runtimetest.Widget); ok {
		s += fmt.Sprintf(" size=%d", w.Spec.Size)
	}
	return s
}

func (r *recorder) record(line string) {
	r.mu.Lock()
	r.inFlight++
	if r.inFlight > 1 {
		r.overlap = true
	}
	r.lines = append(r.lines, line)
	fn := r.onEvent
	r.mu.Unlock()
	if fn != nil {
		fn()
	}
	r.mu.Lock()
	r.inFlight--
	r.mu.Unlock()
}

func (r *recorder) OnAdd(obj meta.Object, initial bool) {
	if initial {
		r.record("add(initial) " + describe(obj))
	} else {
		r.record("add " + describe(obj))
	}
}

func (r *recorder) OnUpdate(o, n meta.Object) {
	r.record("update " + describe(o) + " -> " + describe(n))
}

func (r *recorder) OnDelete(obj meta.Object) { r.record("delete " + describe(obj)) }

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

// waitLines waits until the recorder holds n lines.
func (r *recorder) waitLines(t *testing.T, n int) []string {
	t.Helper()
	runtimetest.Eventually(t, fmt.Sprintf("%d handler calls", n), func() (bool, string) {
		got := r.got()
		return len(got) >= n, strings.Join(got, "; ")
	})
	return r.got()
}

// sorted returns lines sorted, for events whose order a map decides.
func sorted(lines []string) []string {
	out := append([]string(nil), lines...)
	sort.Strings(out)
	return out
}

func equalLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("%s:\n got: %q\nwant: %q", what, got, want)
	}
}

func labelSet(obj meta.Object) labels.Set { return labels.Set(obj.GetObjectMeta().Labels) }
