package source_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
	"github.com/capstanhq/capstan/pkg/store"
)

// fastRetry makes retries quick so that tests of failures do not wait for
// the production backoff.
var fastRetry = source.InformerOptions{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}

// startInformer runs an informer of Widgets over lw with rec attached and
// returns it once its first Watch call arrived; Run must return nil when
// the test ends.
func startInformer(t *testing.T, lw *fakeLW, opts source.InformerOptions, rec source.ResourceEventHandler) (*source.Informer, *fakeWatch) {
	t.Helper()
	inf := source.NewInformer(lw, runtimetest.WidgetKind, opts)
	if rec != nil {
		inf.AddEventHandler(rec)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inf.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := runtimetest.Recv(t, done, "Run to return after cancel"); err != nil {
			t.Errorf("Run returned %v after cancel, want nil", err)
		}
	})
	return inf, lw.nextWatch()
}

func TestInformerListsThenWatches(t *testing.T) {
	runtimetest.CheckLeaks(t)
	lw := newFakeLW(t)
	lw.setState("10", widget("a", "uid-a", 3, 1), widget("b", "uid-b", 5, 1))
	rec := &recorder{}
	inf := source.NewInformer(lw, runtimetest.WidgetKind, fastRetry)
	inf.AddEventHandler(rec)
	if inf.HasSynced() {
		t.Fatal("HasSynced before Run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inf.Run(ctx) }()
	w := lw.nextWatch()
	if !inf.WaitForSync(ctx) || !inf.HasSynced() {
		t.Fatal("not synced after the first list")
	}
	if w.opts.Revision != "10" || !w.opts.Bookmarks {
		t.Fatalf("watch options %+v, want revision 10 with bookmarks", w.opts)
	}
	equalLines(t, "initial list", sorted(rec.waitLines(t, 2)), []string{
		"add(initial) ns/a@3 size=1", "add(initial) ns/b@5 size=1",
	})

	w.send(t,
		ev(store.Added, widget("c", "uid-c", 11, 1), 11),
		ev(store.Modified, widget("a", "uid-a", 12, 2), 12),
		ev(store.Deleted, widget("b", "uid-b", 13, 1), 13),
	)
	got := rec.waitLines(t, 5)
	equalLines(t, "watched events", got[2:], []string{
		"add ns/c@11 size=1", "update ns/a@3 size=1 -> ns/a@12 size=2", "delete ns/b@5 size=1",
	})
	if obj, ok := inf.Get(meta.Key{Namespace: "ns", Name: "a"}); !ok || obj.GetObjectMeta().ResourceVersion != "12" {
		t.Fatalf("cached a = %v, %v; want resourceVersion 12", obj, ok)
	}
	if _, ok := inf.Get(meta.Key{Namespace: "ns", Name: "b"}); ok {
		t.Fatal("deleted b is still cached")
	}
	if n := inf.Len(); n != 2 {
		t.Fatalf("Len = %d, want 2", n)
	}

	cancel()
	if err := runtimetest.Recv(t, done, "Run to return"); err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	w.waitCancelled(t)
	if rec.overlap {
		t.Fatal("handler calls overlapped")
	}
}

func TestInformerDropsReplayedAndStaleEvents(t *testing.T) {
	runtimetest.CheckLeaks(t)
	lw := newFakeLW(t)
	lw.setState("10", widget("a", "uid-a", 3, 1))
	rec := &recorder{}
	_, w := startInformer(t, lw, fastRetry, rec)
	rec.waitLines(t, 1)
	w.send(t,
		ev(store.Added, widget("a", "uid-a", 3, 1), 8),    // the list already showed it
		ev(store.Modified, widget("a", "uid-a", 2, 0), 9), // older than the cache
		ev(store.Modified, widget("a", "uid-a", 4, 2), 11),
		ev(store.Modified, widget("a", "uid-a", 4, 2), 11), // a duplicate
		ev(store.Added, widget("z", "uid-z", 20, 1), 20),   // sentinel
	)
	equalLines(t, "events", rec.waitLines(t, 3), []string{
		"add(initial) ns/a@3 size=1",
		"update ns/a@3 size=1 -> ns/a@4 size=2",
		"add ns/z@20 size=1",
	})
}

func TestInformerDeletedWithKeyOnlyObject(t *testing.T) {
	runtimetest.CheckLeaks(t)
	lw := newFakeLW(t)
	lw.setState("10", widget("a", "uid-a", 3, 7))
	rec := &recorder{}
	inf, w := startInformer(t, lw, fastRetry, rec)
	rec.waitLines(t, 1)
	keyOnly := func(name string) *runtimetest.Widget {
		return &runtimetest.Widget{ObjectMeta: meta.ObjectMeta{Namespace: "ns", Name: name}}
	}
	lw.setState("12") // a is gone from the store
	w.send(t,
		ev(store.Deleted, keyOnly("never-seen"), 11), // nothing cached: nothing to report
		ev(store.Deleted, keyOnly("a"), 12),
		ev(store.Deleted, keyOnly("a"), 12), // replayed: already gone
		ev(store.Added, widget("z", "uid-z", 20, 1), 20),
	)
	got := rec.waitLines(t, 3)
	// The delete reports the last state from the cache, not the key-only
	// object of the event.
	equalLines(t, "events", got, []string{"add(initial) ns/a@3 size=7", "delete ns/a@3 size=7", "add ns/z@20 size=1"})
	if _, ok := inf.Get(meta.Key{Namespace: "ns", Name: "a"}); ok {
		t.Fatal("a is still cached")
	}
}

func TestInformerIncarnations(t *testing.T) {
	runtimetest.CheckLeaks(t)
	lw := newFakeLW(t)
	lw.setState("10", widget("a", "uid-2", 10, 2))
	rec := &recorder{}
	inf, w := startInformer(t, lw, fastRetry, rec)
	rec.waitLines(t, 1)
	w.send(t,
		// The delete of an older incarnation that the list no longer had.
		ev(store.Deleted, widget("a", "uid-1", 5, 1), 11),
		ev(store.Added, widget("z", "uid-z", 12, 1), 12),
	)
	rec.waitLines(t, 2)
	if obj, ok := inf.Get(meta.Key{Namespace: "ns", Name: "a"}); !ok || obj.GetObjectMeta().UID != "uid-2" {
		t.Fatalf("the delete of uid-1 removed uid-2: %v %v", obj, ok)
	}
	w.send(t,
		ev(store.Deleted, widget("a", "uid-2", 13, 2), 13),
		ev(store.Added, widget("a", "uid-3", 14, 3), 14),
	)
	rec.waitLines(t, 4)
	// A new incarnation without a delete before it (the delete was
	// missed) is a delete and an add, not an update.
	w.send(t, ev(store.Modified, widget("a", "uid-4", 15, 4), 15))
	got := rec.waitLines(t, 6)
	equalLines(t, "events", got, []string{
		"add(initial) ns/a@10 size=2", "add ns/z@12 size=1", "delete ns/a@10 size=2", "add ns/a@14 size=3",
		"delete ns/a@14 size=3", "add ns/a@15 size=4",
	})
}

func TestInformerRelistsOnExpiredWithoutPhantomDeletes(t *testing.T) {
	runtimetest.CheckLeaks(t)
	lw := newFakeLW(t)
	lw.setState("10", widget("a", "uid-a", 1, 1), widget("b", "uid-b", 2, 1), widget("c", "uid-c", 3, 1), widget("e", "uid-e1", 4, 1))
	rec := &recorder{}
	inf, w := startInformer(t, lw, fastRetry, rec)
	rec.waitLines(t, 4)
	w.send(t, ev(store.Modified, widget("a", "uid-a", 11, 2), 11))
	rec.waitLines(t, 5)

	// While the watch was away: a unchanged (as the cache has it), b
	// modified, c deleted, d created, e deleted and created again.
	lw.setState("50", widget("a", "uid-a", 11, 2), widget("b", "uid-b", 40, 5), widget("d", "uid-d", 45, 1), widget("e", "uid-e2", 48, 2))
	w.send(t, store.Event{Type: store.Expired, Err: errs.New(errs.OutOfRange, "gone")})
	close(w.ch)
	w2 := lw.nextWatch()
	if w2.opts.Revision != "50" {
		t.Fatalf("watch after relist from %q, want the relist's revision 50", w2.opts.Revision)
	}
	got := rec.waitLines(t, 10)
	equalLines(t, "relist events", sorted(got[5:]), []string{
		"add ns/d@45 size=1", "add ns/e@48 size=2", "delete ns/c@3 size=1", "delete ns/e@4 size=1",
		"update ns/b@2 size=1 -> ns/b@40 size=5",
	})
	if i, j := slices.Index(got, "delete ns/e@4 size=1"), slices.Index(got, "add ns/e@48 size=2"); i > j {
		t.Fatalf("the new e was added before the old one was deleted: %q", got)
	}

	// A second expiry with nothing changed delivers nothing.
	w2.send(t, store.Event{Type: store.Expired})
	close(w2.ch)
	w3 := lw.nextWatch()
	w3.send(t, ev(store.Added, widget("z", "uid-z", 60, 1), 60))
	got = rec.waitLines(t, 11)
	equalLines(t, "after the second relist", got[10:], []string{"add ns/z@60 size=1"})
	if n := len(lw.listCalls()); n != 3 {
		t.Fatalf("%d lists, want 3 (initial and two relists)", n)
	}
	var keys []string
	for _, o := range inf.List("", nil) {
		keys = append(keys, describe(o))
	}
	slices.Sort(keys)
	equalLines(t, "cache", keys, []string{"ns/a@11 size=2", "ns/b@40 size=5", "ns/d@45 size=1", "ns/e@48 size=2", "ns/z@60 size=1"})
}

func TestInformerResumesWatchFromLastRevision(t *testing.T) {
	runtimetest.CheckLeaks(t)
	lw := newFakeLW(t)
	lw.setState("10", widget("a", "uid-a", 1, 1))
	rec := &recorder{}
	_, w := startInformer(t, lw, fastRetry, rec)
	rec.waitLines(t, 1)

	// An Error event: resume from the last event's revision, no relist.
	w.send(t, ev(store.Added, widget("b", "uid-b", 11, 1), 11),
		store.Event{Type: store.Error, Err: errs.New(errs.Unavailable, "connection reset")})
	close(w.ch)
	w = lw.nextWatch()
	if w.opts.Revision != "11" {
		t.Fatalf("resumed from %q, want 11", w.opts.Revision)
	}

	// A bookmark moves the position; a channel closed without a word
	// resumes from there.
	w.send(t, store.Event{Type: store.Bookmark, Revision: "20"})
	close(w.ch)
	w = lw.nextWatch()
	if w.opts.Revision != "20" {
		t.Fatalf("resumed from %q, want the bookmark's 20", w.opts.Revision)
	}

	// Watch itself failing is retried at the same position.
	lw.failNextWatch(errs.New(errs.Unavailable, "no connection"))
	lw.failNextWatch(errs.New(errs.Unavailable, "no connection"))
	w.send(t, store.Event{Type: store.Error, Err: errs.New(errs.Unavailable, "reset")})
	close(w.ch)
	w = lw.nextWatch()
	if w.opts.Revision != "20" {
		t.Fatalf("resumed from %q after failed Watch calls, want 20", w.opts.Revision)
	}
	if n := len(lw.listCalls()); n != 1 {
		t.Fatalf("%d lists, want 1: errors resume the watch, they do not relist", n)
	}

	// A revision the store calls malformed cannot be resumed: relist.
	lw.setState("30", widget("a", "uid-a", 1, 1), widget("b", "uid-b", 11, 1))
	lw.failNextWatch(errs.Invalid("revision", "malformed"))
	w.send(t, store.Event{Type: store.Error, Err: errs.New(errs.Unavailable, "reset")})
	close(w.ch)
	w = lw.nextWatch()
	if w.opts.Revision != "30" {
		t.Fatalf("watch after relist from %q, want 30", w.opts.Revision)
	}
	if n := len(lw.listCalls()); n != 2 {
		t.Fatalf("%d lists, want 2", n)
	}
	w.send(t, ev(store.Added, widget("z", "uid-z", 31, 1), 31))
	equalLines(t, "events", rec.waitLines(t, 3), []string{"add(initial) ns/a@1 size=1", "add ns/b@11 size=1", "add ns/z@31 size=1"})
}

func TestInformerRetriesFailedList(t *testing.T) {
	runtimetest.CheckLeaks(t)
	lw := newFakeLW(t)
	lw.setState("10", widget("a", "uid-a", 1, 1))
	lw.failNextList(errs.New(errs.Unavailable, "down"))
	lw.failNextList(errs.New(errs.DeadlineExceeded, "slow"))
	rec := &recorder{}
	inf, _ := startInformer(t, lw, fastRetry, rec)
	if !inf.HasSynced() {
		t.Fatal("not synced although the watch started")
	}
	if n := len(lw.listCalls()); n != 3 {
		t.Fatalf("%d lists, want 3", n)
	}
	equalLines(t, "events", rec.waitLines(t, 1), []string{"add(initial) ns/a@1 size=1"})
}

func TestInformerRunErrors(t *testing.T) {
	runtimetest.CheckLeaks(t)
	st := runtimetest.Memory(t, runtimetest.NewScheme())
	inf := source.NewInformer(st, "NoSuchKind", fastRetry)
	err := inf.Run(runtimetest.Context(t))
	if !errs.IsInvalidArgument(err) {
		t.Fatalf("Run of an unknown kind = %v, want InvalidArgument", err)
	}
	if inf.HasSynced() {
		t.Fatal("synced an unknown kind")
	}

	lw := newFakeLW(t)
	inf2, _ := startInformer(t, lw, fastRetry, nil)
	if err := inf2.Run(runtimetest.Context(t)); !errs.IsFailedPrecondition(err) {
		t.Fatalf("second Run = %v, want FailedPrecondition", err)
	}
}

func TestInformerWaitForSyncHonoursContext(t *testing.T) {
	runtimetest.CheckLeaks(t)
	lw := newFakeLW(t)
	inf := source.NewInformer(lw, runtimetest.WidgetKind, fastRetry)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if inf.WaitForSync(ctx) {
		t.Fatal("WaitForSync reported a sync that never happened")
	}
}

func TestInformerPagesTheList(t *testing.T) {
	runtimetest.CheckLeaks(t)
	lw := newFakeLW(t)
	var objs []meta.Object
	for i := range 5 {
		objs = append(objs, widget(fmt.Sprintf("w%d", i), fmt.Sprintf("uid-%d", i), i+1, 1))
	}
	lw.setState("10", objs...)
	opts := fastRetry
	opts.PageSize = 2
	inf, w := startInformer(t, lw, opts, nil)
	if n := inf.Len(); n != 5 {
		t.Fatalf("cached %d objects, want 5", n)
	}
	calls := lw.listCalls()
	if len(calls) != 3 || calls[0].Limit != 2 || calls[0].Continue != "" || calls[1].Continue != "2" || calls[2].Continue != "4" {
		t.Fatalf("list calls %+v, want three pages of 2", calls)
	}
	if w.opts.Revision != "10" {
		t.Fatalf("watch from %q, want the first page's revision 10", w.opts.Revision)
	}
}

func TestInformerNamespaceAndSelector(t *testing.T) {
	runtimetest.CheckLeaks(t)
	lw := newFakeLW(t)
	web := widget("a", "uid-a", 1, 1)
	web.Labels = map[string]string{"app": "web"}
	lw.setState("10", web, widget("b", "uid-b", 2, 1))
	opts := fastRetry
	opts.Namespace = "ns"
	opts.Selector = labels.SelectorFromSet(labels.Set{"app": "web"})
	rec := &recorder{}
	inf, w := startInformer(t, lw, opts, rec)
	if lw.listCalls()[0].Namespace != "ns" || lw.listCalls()[0].Selector == nil {
		t.Fatalf("list options %+v, want the namespace and selector", lw.listCalls()[0])
	}
	if w.opts.Namespace != "ns" {
		t.Fatalf("watch options %+v, want namespace ns", w.opts)
	}
	rec.waitLines(t, 1)

	b := widget("b", "uid-b", 11, 1)
	b.Labels = map[string]string{"app": "web"}
	lw.setState("14", widget("a", "uid-a", 13, 2)) // where the events below end
	w.send(t,
		ev(store.Modified, b, 11),                           // starts matching: added
		ev(store.Modified, widget("a", "uid-a", 12, 1), 12), // stops matching: deleted
		ev(store.Modified, widget("a", "uid-a", 13, 2), 13), // still not matching: nothing
		ev(store.Deleted, &runtimetest.Widget{ObjectMeta: meta.ObjectMeta{Namespace: "ns", Name: "b"}}, 14),
	)
	equalLines(t, "events", rec.waitLines(t, 4), []string{
		"add(initial) ns/a@1 size=1", "add ns/b@11 size=1", "delete ns/a@1 size=1", "delete ns/b@11 size=1",
	})
	if n := inf.Len(); n != 0 {
		t.Fatalf("cache holds %d objects, want 0", n)
	}
}

func TestInformerIndexes(t *testing.T) {
	runtimetest.CheckLeaks(t)
	byColor := func(obj meta.Object) []string { return []string{obj.(*runtimetest.Widget).Spec.Color} }
	byTag := func(obj meta.Object) []string { return obj.(*runtimetest.Widget).Spec.Tags }
	red := widget("a", "uid-a", 1, 1)
	red.Spec.Color, red.Spec.Tags = "red", []string{"x", "y"}
	blue := widget("b", "uid-b", 2, 1)
	blue.Spec.Color, blue.Spec.Tags = "blue", []string{"y"}

	lw := newFakeLW(t)
	lw.setState("10", red, blue)
	inf := source.NewInformer(lw, runtimetest.WidgetKind, fastRetry)
	if err := inf.AddIndex("color", byColor); err != nil {
		t.Fatal(err)
	}
	if err := inf.AddIndex("color", byColor); !errs.IsAlreadyExists(err) {
		t.Fatalf("duplicate index: %v, want AlreadyExists", err)
	}
	rec := &recorder{}
	inf.AddEventHandler(rec)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = inf.Run(ctx) }()
	w := lw.nextWatch()

	names := func(index, value string) string {
		t.Helper()
		objs, err := inf.ByIndex(index, value)
		if err != nil {
			t.Fatalf("ByIndex(%s, %s): %v", index, value, err)
		}
		var out []string
		for _, o := range objs {
			out = append(out, o.GetObjectMeta().Name)
		}
		slices.Sort(out)
		return strings.Join(out, ",")
	}
	if got := names("color", "red"); got != "a" {
		t.Fatalf("red = %q, want a", got)
	}
	// An index added after the list indexes what is cached.
	if err := inf.AddIndex("tag", byTag); err != nil {
		t.Fatal(err)
	}
	if got := names("tag", "y"); got != "a,b" {
		t.Fatalf("tag y = %q, want a,b", got)
	}
	if _, err := inf.ByIndex("nope", "x"); !errs.IsFailedPrecondition(err) {
		t.Fatalf("unknown index: %v, want FailedPrecondition", err)
	}

	// Updates move objects between values; deletes remove them.
	red2 := widget("a", "uid-a", 11, 1)
	red2.Spec.Color, red2.Spec.Tags = "blue", []string{"z"}
	w.send(t, ev(store.Modified, red2, 11), ev(store.Deleted, blue, 12), ev(store.Added, widget("s", "uid-s", 13, 1), 13))
	rec.waitLines(t, 5)
	for _, c := range []struct{ index, value, want string }{
		{"color", "red", ""}, {"color", "blue", "a"}, {"tag", "x", ""}, {"tag", "y", ""}, {"tag", "z", "a"}, {"color", "", "s"},
	} {
		if got := names(c.index, c.value); got != c.want {
			t.Errorf("%s=%q: %q, want %q", c.index, c.value, got, c.want)
		}
	}
}

func TestInformerLateHandlerGetsEveryObjectOnce(t *testing.T) {
	runtimetest.CheckLeaks(t)
	lw := newFakeLW(t)
	lw.setState("10", widget("a", "uid-a", 1, 1), widget("b", "uid-b", 2, 1))
	first := &recorder{}
	inf, w := startInformer(t, lw, fastRetry, first)
	first.waitLines(t, 2)

	// Register a handler while events stream: it must see a's history
	// as one add followed by consecutive updates, nothing missed or
	// repeated.
	late := &recorder{}
	const updates = 200
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range updates {
			w.send(t, ev(store.Modified, widget("a", "uid-a", 100+i, 100+i), 100+i))
		}
	}()
	for first.got() == nil || len(first.got()) < 2+updates/4 {
		time.Sleep(time.Millisecond)
	}
	inf.AddEventHandler(late)
	wg.Wait()
	w.send(t, ev(store.Added, widget("z", "uid-z", 1000, 1), 1000))
	first.waitLines(t, 2+updates+1)
	got := late.waitLines(t, 1)
	runtimetest.Eventually(t, "the late handler to see the sentinel", func() (bool, string) {
		got = late.got()
		return len(got) > 0 && got[len(got)-1] == "add ns/z@1000 size=1", strings.Join(got, "; ")
	})
	var aLines []string
	sawB := 0
	for _, l := range got {
		switch {
		case strings.Contains(l, "ns/a@"):
			aLines = append(aLines, l)
		case strings.Contains(l, "ns/b@"):
			sawB++
		}
	}
	if sawB != 1 {
		t.Fatalf("late handler saw b %d times, want once: %q", sawB, got)
	}
	if len(aLines) == 0 || !strings.HasPrefix(aLines[0], "add(initial) ns/a@") {
		t.Fatalf("late handler's first event for a is not an add: %q", aLines)
	}
	var rv int
	fmt.Sscanf(aLines[0], "add(initial) ns/a@%d", &rv)
	for _, l := range aLines[1:] {
		want := fmt.Sprintf("update ns/a@%d size=%d -> ns/a@%d size=%d", rv, rv, rv+1, rv+1)
		if l != want {
			t.Fatalf("late handler: %q after a@%d, want %q", l, rv, want)
		}
		rv++
	}
	if rv != 100+updates-1 {
		t.Fatalf("late handler ended at a@%d, want a@%d", rv, 100+updates-1)
	}
	if first.overlap || late.overlap {
		t.Fatal("handler calls overlapped")
	}
}

// Handlers commonly read the cache (a map function listing related
// objects, the garbage collector's index lookups); that must not deadlock,
// including during the replay for a handler added late.
func TestInformerHandlersMayReadTheCache(t *testing.T) {
	runtimetest.CheckLeaks(t)
	lw := newFakeLW(t)
	lw.setState("10", widget("a", "uid-a", 1, 1))
	var inf *source.Informer
	reads := make(chan int, 100)
	read := func() {
		_, _ = inf.Get(meta.Key{Namespace: "ns", Name: "a"})
		_ = inf.List("", nil)
		_, _ = inf.ByIndex("color", "")
		reads <- inf.Len()
	}
	inf = source.NewInformer(lw, runtimetest.WidgetKind, fastRetry)
	if err := inf.AddIndex("color", func(obj meta.Object) []string { return []string{obj.(*runtimetest.Widget).Spec.Color} }); err != nil {
		t.Fatal(err)
	}
	h := source.HandlerFuncs{
		AddFunc:    func(meta.Object, bool) { read() },
		UpdateFunc: func(meta.Object, meta.Object) { read() },
		DeleteFunc: func(meta.Object) { read() },
	}
	inf.AddEventHandler(h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inf.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(runtimetest.Wait):
			t.Error("Run did not return: the informer is deadlocked")
		}
	}()
	w := lw.nextWatch()
	runtimetest.Recv(t, reads, "the handler's read during the initial list")
	w.send(t, ev(store.Added, widget("b", "uid-b", 11, 1), 11))
	runtimetest.Recv(t, reads, "the handler's read on add")
	w.send(t, ev(store.Modified, widget("b", "uid-b", 12, 2), 12))
	runtimetest.Recv(t, reads, "the handler's read on update")
	w.send(t, ev(store.Deleted, widget("b", "uid-b", 13, 2), 13))
	if n := runtimetest.Recv(t, reads, "the handler's read on delete"); n != 1 {
		t.Fatalf("handler saw %d cached objects during the delete, want 1 (the cache reflects the event)", n)
	}
	lateDone := make(chan struct{})
	go func() { inf.AddEventHandler(h); close(lateDone) }()
	runtimetest.Recv(t, reads, "the late handler's read during its replay")
	runtimetest.Recv(t, lateDone, "AddEventHandler to return")
}

func TestInformerResync(t *testing.T) {
	runtimetest.CheckLeaks(t)
	lw := newFakeLW(t)
	lw.setState("10", widget("a", "uid-a", 1, 1))
	rec := &recorder{}
	opts := fastRetry
	opts.ResyncPeriod = 20 * time.Millisecond
	startInformer(t, lw, opts, rec)
	got := rec.waitLines(t, 3)
	equalLines(t, "resyncs", got[:3], []string{
		"add(initial) ns/a@1 size=1", "update ns/a@1 size=1 -> ns/a@1 size=1", "update ns/a@1 size=1 -> ns/a@1 size=1",
	})
}

// A watch from a list's revision may repeat changes from before the list
// (the store contract allows it). A repeated key-only delete (the MongoDB
// oplog's) of an older incarnation must not remove the newer one the list
// showed: no phantom delete.
func TestInformerIgnoresReplayedKeyOnlyDeleteOfAnOlderIncarnation(t *testing.T) {
	runtimetest.CheckLeaks(t)
	lw := newFakeLW(t)
	lw.setState("10", widget("a", "uid-2", 20, 2))
	rec := &recorder{}
	inf, w := startInformer(t, lw, fastRetry, rec)
	rec.waitLines(t, 1)
	keyOnly := &runtimetest.Widget{ObjectMeta: meta.ObjectMeta{Namespace: "ns", Name: "a"}}
	w.send(t,
		ev(store.Deleted, keyOnly, 11),                   // uid-1's delete, before the list
		ev(store.Added, widget("a", "uid-2", 20, 2), 12), // uid-2's create, which the list showed
		ev(store.Added, widget("z", "uid-z", 30, 1), 30), // sentinel
	)
	equalLines(t, "events", rec.waitLines(t, 2), []string{"add(initial) ns/a@20 size=2", "add ns/z@30 size=1"})
	if lw.getCalls() == 0 {
		t.Fatal("the key-only delete was dropped without asking the store")
	}

	// A real key-only delete still deletes; so does one whose check fails
	// (the replay that follows would add the object back).
	lw.setState("31", widget("z", "uid-z", 30, 1))
	w.send(t, ev(store.Deleted, keyOnly, 31))
	lw.mu.Lock()
	lw.getErr = errs.New(errs.Unavailable, "down")
	lw.mu.Unlock()
	w.send(t, ev(store.Deleted, &runtimetest.Widget{ObjectMeta: meta.ObjectMeta{Namespace: "ns", Name: "z"}}, 32))
	equalLines(t, "events", rec.waitLines(t, 4)[2:], []string{"delete ns/a@20 size=2", "delete ns/z@30 size=1"})
	if inf.Len() != 0 {
		t.Fatalf("cache holds %d objects", inf.Len())
	}
}
