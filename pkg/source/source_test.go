package source_test

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/util/workqueue"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
)

func newQueue(t *testing.T) source.Queue {
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[meta.Key]())
	t.Cleanup(q.ShutDown)
	return q
}

// drain takes every key now in q.
func drain(q source.Queue) []string {
	var out []string
	for q.Len() > 0 {
		k, _ := q.Get()
		out = append(out, k.String())
		q.Done(k)
		q.Forget(k)
	}
	sort.Strings(out)
	return out
}

// eventLog is an EventHandler that records events and enqueues the
// object's key.
type eventLog struct {
	mu     sync.Mutex
	events []string
	ctxs   []context.Context
}

func (l *eventLog) add(ctx context.Context, s string, obj meta.Object, q source.Queue) {
	l.mu.Lock()
	l.events = append(l.events, s+" "+meta.KeyOf(obj).String())
	l.ctxs = append(l.ctxs, ctx)
	l.mu.Unlock()
	q.Add(meta.KeyOf(obj))
}

func (l *eventLog) Create(ctx context.Context, e source.CreateEvent, q source.Queue) {
	s := "create"
	if e.IsInInitialList {
		s = "create(initial)"
	}
	l.add(ctx, s, e.Object, q)
}
func (l *eventLog) Update(ctx context.Context, e source.UpdateEvent, q source.Queue) {
	l.add(ctx, "update", e.ObjectNew, q)
}
func (l *eventLog) Delete(ctx context.Context, e source.DeleteEvent, q source.Queue) {
	l.add(ctx, "delete", e.Object, q)
}
func (l *eventLog) Generic(ctx context.Context, e source.GenericEvent, q source.Queue) {
	l.add(ctx, "generic", e.Object, q)
}

func (l *eventLog) got() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.events...)
}

func (l *eventLog) wait(t *testing.T, n int) []string {
	t.Helper()
	runtimetest.Eventually(t, "handled events", func() (bool, string) {
		got := l.got()
		return len(got) >= n, joinLines(got)
	})
	return l.got()
}

func joinLines(l []string) string {
	s := ""
	for _, x := range l {
		s += x + "; "
	}
	return s
}

// namePredicate passes events of objects whose name is not "skip-<type>".
type namePredicate struct{}

func (namePredicate) Create(e source.CreateEvent) bool {
	return e.Object.GetObjectMeta().Name != "skip-create"
}
func (namePredicate) Update(e source.UpdateEvent) bool {
	return e.ObjectNew.GetObjectMeta().Name != "skip-update"
}
func (namePredicate) Delete(e source.DeleteEvent) bool {
	return e.Object.GetObjectMeta().Name != "skip-delete"
}
func (namePredicate) Generic(e source.GenericEvent) bool {
	return e.Object.GetObjectMeta().Name != "skip-generic"
}

type passAll struct{}

func (passAll) Create(source.CreateEvent) bool   { return true }
func (passAll) Update(source.UpdateEvent) bool   { return true }
func (passAll) Delete(source.DeleteEvent) bool   { return true }
func (passAll) Generic(source.GenericEvent) bool { return true }

func TestKindSource(t *testing.T) {
	runtimetest.CheckLeaks(t)
	st := runtimetest.Memory(t, runtimetest.NewScheme())
	ctx := context.Background()
	mustCreate(t, st, runtimetest.NewWidget("ns", "old", 1), runtimetest.NewWidget("ns", "skip-create", 1))
	c := source.NewCache(st, source.CacheOptions{})
	log := &eventLog{}
	src, err := source.Kind(c, runtimetest.WidgetKind, log, passAll{}, namePredicate{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := source.Kind(c, "Nope", log); !errs.IsInvalidArgument(err) {
		t.Fatalf("Kind of an unknown kind: %v, want InvalidArgument", err)
	}
	q := newQueue(t)
	type ctxKey struct{}
	sctx := context.WithValue(runtimetest.Context(t), ctxKey{}, "source")
	if err := src.Start(sctx, q); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Millisecond)
	err = src.WaitForSync(wctx)
	wcancel()
	if !errs.IsDeadlineExceeded(err) {
		t.Fatalf("WaitForSync before the cache runs: %v, want DeadlineExceeded", err)
	}
	startCache(t, c)
	if err := src.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := log.wait(t, 1); len(got) != 1 || got[0] != "create(initial) ns/old" {
		t.Fatalf("initial events %q, want only ns/old (skip-create is filtered)", got)
	}

	for _, n := range []string{"new", "skip-update", "skip-delete"} {
		mustCreate(t, st, runtimetest.NewWidget("ns", n, 1))
	}
	for _, n := range []string{"skip-update", "new"} {
		var w runtimetest.Widget
		if err := st.Get(ctx, meta.Key{Namespace: "ns", Name: n}, &w); err != nil {
			t.Fatal(err)
		}
		w.Spec.Size++
		if err := st.Update(ctx, &w); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"skip-delete", "old"} {
		if err := st.Delete(ctx, runtimetest.NewWidget("ns", n, 0)); err != nil {
			t.Fatal(err)
		}
	}
	mustCreate(t, st, runtimetest.NewWidget("ns", "sentinel", 1))
	got := log.wait(t, 7)
	want := []string{"create(initial) ns/old", "create ns/new", "create ns/skip-update", "create ns/skip-delete",
		"update ns/new", "delete ns/old", "create ns/sentinel"}
	equalLines(t, "events", got, want)
	if v := log.ctxs[0].Value(ctxKey{}); v != "source" {
		t.Fatal("the handler did not get the context Start was given")
	}
	if keys := drain(q); joinLines(keys) != "ns/new; ns/old; ns/sentinel; ns/skip-delete; ns/skip-update; " {
		t.Fatalf("queue holds %q", keys)
	}
}

func TestChannelSource(t *testing.T) {
	runtimetest.CheckLeaks(t)
	ch := make(chan source.GenericEvent)
	log := &eventLog{}
	q := newQueue(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := source.Channel(ch, log, namePredicate{}).Start(ctx, q); err != nil {
		t.Fatal(err)
	}
	send := func(name string) {
		t.Helper()
		select {
		case ch <- source.GenericEvent{Object: runtimetest.NewWidget("ns", name, 0)}:
		case <-time.After(runtimetest.Wait):
			t.Fatal("channel source does not read")
		}
	}
	send("a")
	send("skip-generic")
	send("b")
	log.wait(t, 2)
	send("c") // proves skip-generic was consumed and dropped before it
	equalLines(t, "events", log.wait(t, 3), []string{"generic ns/a", "generic ns/b", "generic ns/c"})

	// After the context ends, nobody reads the channel.
	cancel()
	runtimetest.Eventually(t, "the source to stop reading", func() (bool, string) {
		select {
		case ch <- source.GenericEvent{Object: runtimetest.NewWidget("ns", "late", 0)}:
			return false, "a send still succeeded"
		case <-time.After(20 * time.Millisecond):
			return true, ""
		}
	})
	if n := len(log.got()); n > 4 {
		t.Fatalf("%d events after cancel", n)
	}
}

func TestChannelSourceStopsWhenTheChannelCloses(t *testing.T) {
	runtimetest.CheckLeaks(t)
	ch := make(chan source.GenericEvent, 1)
	log := &eventLog{}
	ch <- source.GenericEvent{Object: runtimetest.NewWidget("ns", "a", 0)}
	close(ch)
	if err := source.Channel(ch, log).Start(runtimetest.Context(t), newQueue(t)); err != nil {
		t.Fatal(err)
	}
	equalLines(t, "events", log.wait(t, 1), []string{"generic ns/a"})
}

func TestPeriodicSource(t *testing.T) {
	runtimetest.CheckLeaks(t)
	log := &eventLog{}
	if err := source.Periodic(0, nil, log).Start(context.Background(), newQueue(t)); !errs.IsInvalidArgument(err) {
		t.Fatalf("zero interval: %v, want InvalidArgument", err)
	}
	var mu sync.Mutex
	calls := 0
	objects := func(context.Context) []meta.Object {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return []meta.Object{runtimetest.NewWidget("ns", "a", 0), runtimetest.NewWidget("ns", "b", 0)}
	}
	q := newQueue(t)
	ctx, cancel := context.WithCancel(context.Background())
	if err := source.Periodic(5*time.Millisecond, objects, log).Start(ctx, q); err != nil {
		t.Fatal(err)
	}
	got := log.wait(t, 4)
	equalLines(t, "first two ticks", got[:4], []string{"generic ns/a", "generic ns/b", "generic ns/a", "generic ns/b"})
	cancel()
	mu.Lock()
	stoppedAt := calls
	mu.Unlock()
	// A tick may be in progress at cancel; after that the timer is dead.
	runtimetest.Eventually(t, "ticks to stop", func() (bool, string) {
		mu.Lock()
		before := calls
		mu.Unlock()
		time.Sleep(30 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		return calls == before && calls <= stoppedAt+1, ""
	})
	// Drained only now that ticks have stopped: while they run, a tick
	// may re-add a key the drain has just taken out.
	if keys := drain(q); joinLines(keys) != "ns/a; ns/b; " {
		t.Fatalf("queue holds %q: repeated events must collapse", keys)
	}
}
