package source_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/memory"
)

// startCache starts c until the test ends and waits for its informers to
// sync.
func startCache(t *testing.T, c *source.Cache) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := runtimetest.Recv(t, done, "Cache.Start to return"); err != nil {
			t.Errorf("Cache.Start = %v after cancel, want nil", err)
		}
	})
	sctx, scancel := context.WithTimeout(ctx, runtimetest.Wait)
	defer scancel()
	if !c.WaitForCacheSync(sctx) {
		t.Fatal("cache did not sync")
	}
}

func mustCreate(t *testing.T, st store.Writer, objs ...meta.Object) {
	t.Helper()
	for _, o := range objs {
		if err := st.Create(context.Background(), o); err != nil {
			t.Fatalf("create %s: %v", meta.KeyOf(o), err)
		}
	}
}

func TestCacheReadsNeedAnInformer(t *testing.T) {
	runtimetest.CheckLeaks(t)
	st := runtimetest.Memory(t, runtimetest.NewScheme())
	mustCreate(t, st, runtimetest.NewWidget("ns", "a", 1))
	c := source.NewCache(st, source.CacheOptions{})
	ctx := context.Background()

	var w runtimetest.Widget
	if err := c.Get(ctx, meta.Key{Namespace: "ns", Name: "a"}, &w); !errs.IsFailedPrecondition(err) {
		t.Fatalf("Get without an informer: %v, want FailedPrecondition", err)
	}
	if _, err := c.List(ctx, runtimetest.WidgetKind, store.ListOptions{}); !errs.IsFailedPrecondition(err) {
		t.Fatalf("List without an informer: %v, want FailedPrecondition", err)
	}
	if _, err := c.ListByIndex(ctx, runtimetest.WidgetKind, "x", "y"); !errs.IsFailedPrecondition(err) {
		t.Fatalf("ListByIndex without an informer: %v, want FailedPrecondition", err)
	}
	type unregistered struct{ meta.ObjectMeta }
	if err := c.Get(ctx, meta.Key{Name: "a"}, &unregistered{}); !errs.IsInvalidArgument(err) {
		t.Fatalf("Get of an unregistered type: %v, want InvalidArgument", err)
	}
	if _, err := c.Informer("Nope"); !errs.IsInvalidArgument(err) {
		t.Fatalf("Informer of an unknown kind: %v, want InvalidArgument", err)
	}
	if err := c.IndexField("Nope", "i", func(meta.Object) []string { return nil }); !errs.IsInvalidArgument(err) {
		t.Fatalf("IndexField of an unknown kind: %v, want InvalidArgument", err)
	}

	// Once an informer exists and synced, the same reads work; other kinds
	// still fail.
	if _, err := c.Informer(runtimetest.WidgetKind); err != nil {
		t.Fatal(err)
	}
	startCache(t, c)
	if err := c.Get(ctx, meta.Key{Namespace: "ns", Name: "a"}, &w); err != nil || w.Spec.Size != 1 {
		t.Fatalf("Get = %v, %+v", err, w)
	}
	if err := c.Get(ctx, meta.Key{Namespace: "ns", Name: "missing"}, &w); !errs.IsNotFound(err) {
		t.Fatalf("Get of a missing object: %v, want NotFound", err)
	}
	if err := c.Get(ctx, meta.Key{Namespace: "ns", Name: "a"}, &runtimetest.Gadget{}); !errs.IsFailedPrecondition(err) {
		t.Fatalf("Get of a kind without an informer: %v, want FailedPrecondition", err)
	}
}

func TestCacheReadsAreDeepCopies(t *testing.T) {
	runtimetest.CheckLeaks(t)
	st := runtimetest.Memory(t, runtimetest.NewScheme())
	w := runtimetest.NewWidget("ns", "a", 1)
	w.Labels = map[string]string{"app": "web"}
	w.Spec.Tags = []string{"x", "y"}
	mustCreate(t, st, w)
	c := source.NewCache(st, source.CacheOptions{})
	if err := c.IndexField(runtimetest.WidgetKind, "app", func(o meta.Object) []string {
		return []string{o.GetObjectMeta().Labels["app"]}
	}); err != nil {
		t.Fatal(err)
	}
	startCache(t, c)
	ctx := context.Background()
	key := meta.Key{Namespace: "ns", Name: "a"}

	scribble := func(o meta.Object) {
		x := o.(*runtimetest.Widget)
		x.Labels["app"] = "scribbled"
		x.Spec.Tags[0] = "scribbled"
		x.Spec.Size = 99
		x.Annotations = map[string]string{"a": "b"}
	}
	var got runtimetest.Widget
	if err := c.Get(ctx, key, &got); err != nil {
		t.Fatal(err)
	}
	scribble(&got)
	res, err := c.List(ctx, runtimetest.WidgetKind, store.ListOptions{})
	if err != nil || len(res.Items) != 1 {
		t.Fatalf("List = %v, %v", res, err)
	}
	scribble(res.Items[0])
	byIdx, err := c.ListByIndex(ctx, runtimetest.WidgetKind, "app", "web")
	if err != nil || len(byIdx) != 1 {
		t.Fatalf("ListByIndex = %v, %v", byIdx, err)
	}
	scribble(byIdx[0])

	var again runtimetest.Widget
	if err := c.Get(ctx, key, &again); err != nil {
		t.Fatal(err)
	}
	if again.Labels["app"] != "web" || again.Spec.Tags[0] != "x" || again.Spec.Size != 1 || again.Annotations != nil {
		t.Fatalf("a reader's changes leaked into the cache: %+v", again)
	}
	inf, _ := c.Informer(runtimetest.WidgetKind)
	if objs, _ := inf.ByIndex("app", "web"); len(objs) != 1 {
		t.Fatal("a reader's change to labels moved the cached object in the index")
	}
	// Two reads share nothing either.
	var a, b runtimetest.Widget
	_ = c.Get(ctx, key, &a)
	_ = c.Get(ctx, key, &b)
	a.Spec.Tags[1] = "changed"
	if b.Spec.Tags[1] != "y" {
		t.Fatal("two Gets share a slice")
	}
}

func TestCacheListFiltersSortsAndRefusesPaging(t *testing.T) {
	runtimetest.CheckLeaks(t)
	st := runtimetest.Memory(t, runtimetest.NewScheme())
	for _, k := range []struct{ ns, name, app string }{
		{"ns2", "b", "web"}, {"ns1", "c", "db"}, {"ns1", "a", "web"}, {"ns2", "a", "db"},
	} {
		w := runtimetest.NewWidget(k.ns, k.name, 1)
		w.Labels = map[string]string{"app": k.app}
		mustCreate(t, st, w)
	}
	c := source.NewCache(st, source.CacheOptions{})
	if _, err := c.Informer(runtimetest.WidgetKind); err != nil {
		t.Fatal(err)
	}
	startCache(t, c)
	ctx := context.Background()
	list := func(opts store.ListOptions) string {
		t.Helper()
		res, err := c.List(ctx, runtimetest.WidgetKind, opts)
		if err != nil {
			t.Fatal(err)
		}
		var keys []meta.Key
		for _, o := range res.Items {
			keys = append(keys, meta.KeyOf(o))
		}
		return runtimetest.Keys(keys)
	}
	if got := list(store.ListOptions{}); got != "[ns1/a ns1/c ns2/a ns2/b]" {
		t.Fatalf("List = %s", got)
	}
	if got := list(store.ListOptions{Namespace: "ns2"}); got != "[ns2/a ns2/b]" {
		t.Fatalf("List in ns2 = %s", got)
	}
	if got := list(store.ListOptions{Selector: labels.SelectorFromSet(labels.Set{"app": "web"})}); got != "[ns1/a ns2/b]" {
		t.Fatalf("List app=web = %s", got)
	}
	typed, _, err := store.ListOf[runtimetest.Widget](ctx, c, store.ListOptions{Namespace: "ns1"})
	if err != nil || len(typed) != 2 || typed[0].Name != "a" {
		t.Fatalf("ListOf = %v, %v", typed, err)
	}
	if _, err := c.List(ctx, runtimetest.WidgetKind, store.ListOptions{Limit: 1}); !errs.IsInvalidArgument(err) {
		t.Fatalf("List with a limit: %v, want InvalidArgument", err)
	}
	if _, err := c.List(ctx, runtimetest.WidgetKind, store.ListOptions{Continue: "x"}); !errs.IsInvalidArgument(err) {
		t.Fatalf("List with a continue token: %v, want InvalidArgument", err)
	}
}

func TestCacheIndexFollowsTheStore(t *testing.T) {
	runtimetest.CheckLeaks(t)
	st := runtimetest.Memory(t, runtimetest.NewScheme())
	c := source.NewCache(st, source.CacheOptions{})
	if err := c.IndexField(runtimetest.WidgetKind, "color", func(o meta.Object) []string {
		return []string{o.(*runtimetest.Widget).Spec.Color}
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.IndexField(runtimetest.WidgetKind, "color", nil); !errs.IsAlreadyExists(err) {
		t.Fatalf("second index of one name: %v, want AlreadyExists", err)
	}
	startCache(t, c)
	ctx := context.Background()
	for i := range 4 {
		w := runtimetest.NewWidget("ns", fmt.Sprintf("w%d", i), i)
		w.Spec.Color = []string{"red", "blue"}[i%2]
		mustCreate(t, st, w)
	}
	names := func(color string) string {
		objs, err := c.ListByIndex(ctx, runtimetest.WidgetKind, "color", color)
		if err != nil {
			t.Fatal(err)
		}
		var keys []meta.Key
		for _, o := range objs {
			keys = append(keys, meta.KeyOf(o))
		}
		return runtimetest.Keys(keys)
	}
	waitFor := func(color, want string) {
		t.Helper()
		runtimetest.Eventually(t, color+" = "+want, func() (bool, string) {
			got := names(color)
			return got == want, got
		})
	}
	waitFor("red", "[ns/w0 ns/w2]")
	waitFor("blue", "[ns/w1 ns/w3]")

	var w runtimetest.Widget
	if err := st.Get(ctx, meta.Key{Namespace: "ns", Name: "w0"}, &w); err != nil {
		t.Fatal(err)
	}
	w.Spec.Color = "blue"
	if err := st.Update(ctx, &w); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, &runtimetest.Widget{ObjectMeta: meta.ObjectMeta{Namespace: "ns", Name: "w3"}}); err != nil {
		t.Fatal(err)
	}
	waitFor("red", "[ns/w2]")
	waitFor("blue", "[ns/w0 ns/w1]")
	if _, err := c.ListByIndex(ctx, runtimetest.WidgetKind, "nope", "x"); !errs.IsFailedPrecondition(err) {
		t.Fatalf("unknown index: %v, want FailedPrecondition", err)
	}
}

func TestCacheStartsInformersCreatedLater(t *testing.T) {
	runtimetest.CheckLeaks(t)
	st := runtimetest.Memory(t, runtimetest.NewScheme())
	mustCreate(t, st, runtimetest.NewGadget("ns", "g"))
	c := source.NewCache(st, source.CacheOptions{})
	startCache(t, c) // no informers yet: synced at once
	inf, err := c.Informer(runtimetest.GadgetKind)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), runtimetest.Wait)
	defer cancel()
	if !inf.WaitForSync(ctx) || !c.WaitForCacheSync(ctx) || !c.HasSynced() {
		t.Fatal("an informer created after Start did not run")
	}
	var g runtimetest.Gadget
	if err := c.Get(ctx, meta.Key{Namespace: "ns", Name: "g"}, &g); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); !errs.IsFailedPrecondition(err) {
		t.Fatalf("second Start: %v, want FailedPrecondition", err)
	}
}

func TestCacheNamespaceRestriction(t *testing.T) {
	runtimetest.CheckLeaks(t)
	st := runtimetest.Memory(t, runtimetest.NewScheme())
	mustCreate(t, st, runtimetest.NewWidget("mine", "a", 1), runtimetest.NewWidget("other", "b", 1))
	c := source.NewCache(st, source.CacheOptions{Namespace: "mine"})
	if _, err := c.Informer(runtimetest.WidgetKind); err != nil {
		t.Fatal(err)
	}
	startCache(t, c)
	mustCreate(t, st, runtimetest.NewWidget("other", "c", 1), runtimetest.NewWidget("mine", "d", 1))
	ctx := context.Background()
	runtimetest.Eventually(t, "mine/d in the cache", func() (bool, string) {
		err := c.Get(ctx, meta.Key{Namespace: "mine", Name: "d"}, &runtimetest.Widget{})
		return err == nil, fmt.Sprint(err)
	})
	res, err := c.List(ctx, runtimetest.WidgetKind, store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Items) != 2 {
		t.Fatalf("cache of namespace mine holds %d objects, want 2", len(res.Items))
	}
	for _, o := range res.Items {
		if o.GetObjectMeta().Namespace != "mine" {
			t.Fatalf("cache of namespace mine holds %s", meta.KeyOf(o))
		}
	}
}

func TestCacheSyncWaitEndsWithContext(t *testing.T) {
	runtimetest.CheckLeaks(t)
	st := memory.New(runtimetest.NewScheme())
	if err := st.Close(context.Background()); err != nil { // every List fails
		t.Fatal(err)
	}
	c := source.NewCache(st, source.CacheOptions{Informer: fastRetry})
	if _, err := c.Informer(runtimetest.WidgetKind); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Start(ctx) }()
	sctx, scancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer scancel()
	if c.WaitForCacheSync(sctx) || c.HasSynced() {
		t.Fatal("synced over a store that fails every list")
	}
	cancel()
	if err := runtimetest.Recv(t, done, "Start to return"); err != nil {
		t.Fatalf("Start = %v, want nil", err)
	}
	// After the cache stopped, asking for a new informer must not start
	// one that nobody waits for.
	if _, err := c.Informer(runtimetest.GadgetKind); err != nil {
		t.Fatal(err)
	}
}

// countingLW counts the informer's lists of a real store.
type countingLW struct {
	source.ListWatcher
	lists atomic.Int32
}

func (c *countingLW) List(ctx context.Context, kind string, opts store.ListOptions) (*store.ListResult, error) {
	c.lists.Add(1)
	return c.ListWatcher.List(ctx, kind, opts)
}

// A memory store with a tiny history expires a watch that fell behind; the
// informer relists and reports exactly the differences: every real delete
// once, no delete of an object that is still there.
func TestInformerRelistOverMemoryStoreWithTinyHistory(t *testing.T) {
	runtimetest.CheckLeaks(t)
	st := runtimetest.Memory(t, runtimetest.NewScheme(), memory.WithHistory(4))
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c", "d"} {
		mustCreate(t, st, runtimetest.NewWidget("ns", n, 0))
	}
	lw := &countingLW{ListWatcher: st}
	inf := source.NewInformer(lw, runtimetest.WidgetKind, fastRetry)

	var mu sync.Mutex
	deletes := map[string]int{} // uid → deletes reported
	adds := map[string]int{}    // uid → adds reported
	gate := make(chan struct{})
	var gated atomic.Bool
	inf.AddEventHandler(source.HandlerFuncs{
		AddFunc: func(obj meta.Object, initial bool) {
			mu.Lock()
			adds[obj.GetObjectMeta().UID]++
			mu.Unlock()
			if !initial && gated.CompareAndSwap(false, true) {
				<-gate // hold the informer so that its watch falls behind
			}
		},
		UpdateFunc: func(o, n meta.Object) {
			if gated.CompareAndSwap(false, true) {
				<-gate
			}
		},
		DeleteFunc: func(obj meta.Object) {
			mu.Lock()
			deletes[obj.GetObjectMeta().UID]++
			mu.Unlock()
		},
	})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- inf.Run(rctx) }()
	defer func() { cancel(); runtimetest.Recv(t, done, "Run to return") }()
	sctx, scancel := context.WithTimeout(ctx, runtimetest.Wait)
	defer scancel()
	if !inf.WaitForSync(sctx) {
		t.Fatal("no sync")
	}
	uidOf := func(name string) string {
		var w runtimetest.Widget
		if err := st.Get(ctx, meta.Key{Namespace: "ns", Name: name}, &w); err != nil {
			t.Fatal(err)
		}
		return w.UID
	}
	oldC, oldD := uidOf("c"), uidOf("d")

	update := func(name string, size int) {
		var w runtimetest.Widget
		if err := st.Get(ctx, meta.Key{Namespace: "ns", Name: name}, &w); err != nil {
			t.Fatal(err)
		}
		w.Spec.Size = size
		if err := st.Update(ctx, &w); err != nil {
			t.Fatal(err)
		}
	}
	del := func(name string) {
		if err := st.Delete(ctx, &runtimetest.Widget{ObjectMeta: meta.ObjectMeta{Namespace: "ns", Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	update("a", 1) // the handler blocks on this one
	runtimetest.Eventually(t, "the handler to block", func() (bool, string) { return gated.Load(), "" })
	for i := range 300 { // far more than the watch buffers and the ring hold
		update("b", i+1)
	}
	del("c")
	mustCreate(t, st, runtimetest.NewWidget("ns", "e", 0), runtimetest.NewWidget("ns", "f", 0))
	del("f")
	del("d")
	mustCreate(t, st, runtimetest.NewWidget("ns", "d", 5))
	for i := range 20 {
		update("a", 100+i)
	}
	close(gate)

	// The cache converges on the store.
	runtimetest.Eventually(t, "the cache to match the store", func() (bool, string) {
		res, err := st.List(ctx, runtimetest.WidgetKind, store.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		want := map[meta.Key]string{}
		for _, o := range res.Items {
			want[meta.KeyOf(o)] = o.GetObjectMeta().ResourceVersion
		}
		got := map[meta.Key]string{}
		for _, o := range inf.List("", nil) {
			got[meta.KeyOf(o)] = o.GetObjectMeta().ResourceVersion
		}
		return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprintf("cache %v, store %v", got, want)
	})
	if n := lw.lists.Load(); n < 2 {
		t.Fatalf("%d lists: the watch never expired, so this test proved nothing", n)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, n := range []string{"a", "b", "e", "d"} {
		if u := uidOf(n); deletes[u] != 0 {
			t.Errorf("%s (still stored) was reported deleted %d times", n, deletes[u])
		}
	}
	if deletes[oldC] != 1 || deletes[oldD] != 1 {
		t.Errorf("deletes of c and the old d reported %d and %d times, want once each", deletes[oldC], deletes[oldD])
	}
	if adds[uidOf("e")] != 1 || adds[uidOf("d")] != 1 {
		t.Errorf("adds of e and the new d reported %d and %d times, want once each", adds[uidOf("e")], adds[uidOf("d")])
	}
	for uid, n := range deletes {
		if adds[uid] != n {
			t.Errorf("uid %s: %d adds but %d deletes", uid, adds[uid], n)
		}
	}
}

// failingStore refuses to list one kind, as a store does for a kind it
// does not know.
type failingStore struct {
	source.Store
	kind string
}

func (f failingStore) List(ctx context.Context, kind string, opts store.ListOptions) (*store.ListResult, error) {
	if kind == f.kind {
		return nil, errs.Invalid("kind", "unknown kind %q", kind)
	}
	return f.Store.List(ctx, kind, opts)
}

func TestCacheStopsOnAnInformerThatFailsForGood(t *testing.T) {
	runtimetest.CheckLeaks(t)
	st := runtimetest.Memory(t, runtimetest.NewScheme())
	c := source.NewCache(failingStore{Store: st, kind: runtimetest.GadgetKind}, source.CacheOptions{})
	for _, k := range []string{runtimetest.WidgetKind, runtimetest.GadgetKind} {
		if _, err := c.Informer(k); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- c.Start(runtimetest.Context(t)) }()
	if err := runtimetest.Recv(t, done, "Start to return the informer's error"); !errs.IsInvalidArgument(err) {
		t.Fatalf("Start = %v, want the informer's InvalidArgument", err)
	}
}

// A typed kind read as Unstructured (as tools do) is converted, as the
// store itself does.
func TestCacheGetConvertsToUnstructured(t *testing.T) {
	runtimetest.CheckLeaks(t)
	st := runtimetest.Memory(t, runtimetest.NewScheme())
	w := runtimetest.NewWidget("ns", "a", 5)
	w.Labels = map[string]string{"app": "web"}
	mustCreate(t, st, w)
	c := source.NewCache(st, source.CacheOptions{})
	if _, err := c.Informer(runtimetest.WidgetKind); err != nil {
		t.Fatal(err)
	}
	startCache(t, c)
	u := &meta.Unstructured{Kind: runtimetest.WidgetKind}
	if err := c.Get(context.Background(), meta.KeyOf(w), u); err != nil {
		t.Fatal(err)
	}
	var fromStore meta.Unstructured
	fromStore.Kind = runtimetest.WidgetKind
	if err := st.Get(context.Background(), meta.KeyOf(w), &fromStore); err != nil {
		t.Fatal(err)
	}
	if u.Kind != runtimetest.WidgetKind || u.UID != w.UID || u.Labels["app"] != "web" || fmt.Sprint(u.Fields["spec"]) != fmt.Sprint(fromStore.Fields["spec"]) {
		t.Fatalf("cache gave %+v, the store gives %+v", u, fromStore)
	}
}

func TestCacheOfAnUnstructuredKind(t *testing.T) {
	runtimetest.CheckLeaks(t)
	st := runtimetest.Memory(t, runtimetest.NewScheme())
	mustCreate(t, st, runtimetest.NewDoodad("ns", "d1", map[string]any{"x": "1"}))
	c := source.NewCache(st, source.CacheOptions{})
	if _, err := c.Informer(runtimetest.DoodadKind); err != nil {
		t.Fatal(err)
	}
	startCache(t, c)
	mustCreate(t, st, runtimetest.NewDoodad("ns", "d2", map[string]any{"x": "2"}))
	ctx := context.Background()
	u := &meta.Unstructured{Kind: runtimetest.DoodadKind}
	runtimetest.Eventually(t, "d2 in the cache", func() (bool, string) {
		err := c.Get(ctx, meta.Key{Namespace: "ns", Name: "d2"}, u)
		return err == nil, fmt.Sprint(err)
	})
	spec, _ := u.Field("spec")
	if u.Kind != runtimetest.DoodadKind || fmt.Sprint(spec) != "map[x:2]" {
		t.Fatalf("Get = %+v", u)
	}
	spec.(map[string]any)["x"] = "scribbled"
	res, err := c.List(ctx, runtimetest.DoodadKind, store.ListOptions{})
	if err != nil || len(res.Items) != 2 {
		t.Fatalf("List = %v, %v", res, err)
	}
	for i, it := range res.Items {
		d, ok := it.(*meta.Unstructured)
		if !ok {
			t.Fatalf("item %T, want *meta.Unstructured", it)
		}
		if s, _ := d.Field("spec"); fmt.Sprint(s) != fmt.Sprintf("map[x:%d]", i+1) {
			t.Fatalf("item %d spec %v (a reader's change leaked?)", i, s)
		}
	}
}
