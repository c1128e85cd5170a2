package storetest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

func (s *suite) listTests() []test {
	return []test{
		{"OrderedByNamespaceThenName", s.testListOrdered},
		{"NamespaceFilter", s.testListNamespaceFilter},
		{"LabelSelector", s.testListLabelSelector},
		{"ReturnsIsolatedCopies", s.testListReturnsIsolatedCopies},
		{"Unstructured", s.testListUnstructured},
		{"ClusterScoped", s.testListClusterScoped},
		{"Pagination", s.testListPagination},
		{"PaginationWithFilters", s.testListPaginationWithFilters},
		{"PaginationStableUnderConcurrentWrites", s.testListPaginationStableUnderConcurrentWrites},
		{"MalformedContinue", s.testListMalformedContinue},
		{"Empty", s.testListEmpty},
	}
}

func keysOf(items []meta.Object) []meta.Key {
	out := make([]meta.Key, len(items))
	for i, it := range items {
		out[i] = meta.KeyOf(it)
	}
	return out
}

func compareKeys(a, b meta.Key) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

func sortedKeys(keys []meta.Key) []meta.Key {
	out := slices.Clone(keys)
	slices.SortFunc(out, compareKeys)
	return out
}

// createWidgets creates widgets with the given keys in a random order.
func createWidgets(t *testing.T, st store.Store, keys []meta.Key) {
	t.Helper()
	order := slices.Clone(keys)
	rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for _, k := range order {
		mustCreate(t, st, widget(k.Namespace, k.Name))
	}
}

func list(t *testing.T, st store.Store, kind string, opts store.ListOptions) *store.ListResult {
	t.Helper()
	res, err := st.List(ctx(t), kind, opts)
	if err != nil {
		t.Fatalf("List %s %+v: %v", kind, opts, err)
	}
	if res.Revision == "" {
		t.Fatalf("List %s returned no revision", kind)
	}
	return res
}

func (s *suite) testListOrdered(t *testing.T) {
	st := s.newStore(t)
	keys := []meta.Key{
		{Namespace: "b", Name: "a"}, {Namespace: "a", Name: "z"}, {Namespace: "a", Name: "a-1"},
		{Namespace: "a", Name: "a"}, {Namespace: "a", Name: "a.b"}, {Namespace: "b", Name: "0"},
		{Namespace: "ab", Name: "m"}, {Namespace: "a", Name: "b"},
	}
	createWidgets(t, st, keys)
	res := list(t, st, WidgetKind, store.ListOptions{})
	if got, want := keysOf(res.Items), sortedKeys(keys); !slices.Equal(got, want) {
		t.Errorf("List order %v, want %v", got, want)
	}
	for _, it := range res.Items {
		if _, ok := it.(*Widget); !ok {
			t.Fatalf("List item is %T, want *Widget", it)
		}
	}
	typed, _, err := store.ListOf[Widget](ctx(t), st, store.ListOptions{Namespace: "a"})
	if err != nil || len(typed) != 5 {
		t.Errorf("ListOf[Widget] in a = %d items, %v; want 5", len(typed), err)
	}
}

func (s *suite) testListNamespaceFilter(t *testing.T) {
	st := s.newStore(t)
	createWidgets(t, st, []meta.Key{{Namespace: "a", Name: "1"}, {Namespace: "ab", Name: "2"}, {Namespace: "b", Name: "3"}, {Namespace: "a", Name: "4"}})
	res := list(t, st, WidgetKind, store.ListOptions{Namespace: "a"})
	if got, want := keysOf(res.Items), []meta.Key{{Namespace: "a", Name: "1"}, {Namespace: "a", Name: "4"}}; !slices.Equal(got, want) {
		t.Errorf("List in a = %v, want %v", got, want)
	}
	res = list(t, st, WidgetKind, store.ListOptions{Namespace: "none"})
	if len(res.Items) != 0 {
		t.Errorf("List in an empty namespace = %v", keysOf(res.Items))
	}
}

func (s *suite) testListLabelSelector(t *testing.T) {
	st := s.newStore(t)
	for i, tier := range []string{"web", "db", "web", "cache", ""} {
		w := widget("ns1", fmt.Sprint("w", i))
		if tier != "" {
			w.Labels["tier"] = tier
		}
		mustCreate(t, st, w)
	}
	names := func(sel labels.Selector, ns string) []string {
		res := list(t, st, WidgetKind, store.ListOptions{Selector: sel, Namespace: ns})
		var out []string
		for _, it := range res.Items {
			out = append(out, it.GetObjectMeta().Name)
		}
		return out
	}
	parse := func(s string) labels.Selector {
		sel, err := labels.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return sel
	}
	cases := []struct {
		sel  labels.Selector
		ns   string
		want []string
	}{
		{labels.SelectorFromSet(labels.Set{"tier": "web"}), "", []string{"w0", "w2"}},
		{parse("tier in (db,cache)"), "", []string{"w1", "w3"}},
		{parse("tier"), "", []string{"w0", "w1", "w2", "w3"}},
		{parse("!tier"), "", []string{"w4"}},
		{parse("tier!=web,app=demo"), "", []string{"w1", "w3", "w4"}},
		{parse("tier=none"), "", nil},
		{labels.Everything(), "", []string{"w0", "w1", "w2", "w3", "w4"}},
		{labels.SelectorFromSet(labels.Set{"tier": "web"}), "other", nil},
	}
	for _, c := range cases {
		if got := names(c.sel, c.ns); !slices.Equal(got, c.want) {
			t.Errorf("List with selector %q in %q = %v, want %v", c.sel, c.ns, got, c.want)
		}
	}
}

func (s *suite) testListReturnsIsolatedCopies(t *testing.T) {
	st := s.newStore(t)
	mustCreate(t, st, widget("ns1", "w1"))
	want := frozenWidget(t, st, "ns1", "w1")
	res := list(t, st, WidgetKind, store.ListOptions{})
	w := res.Items[0].(*Widget)
	w.Spec.Tags[0] = "changed"
	w.Spec.Nested["k"] = "changed"
	w.Labels["app"] = "changed"
	if got := mustGetWidget(t, st, "ns1", "w1"); !sameWidget(got, want) {
		t.Errorf("mutating a List item changed the store: got %+v, want %+v", got, want)
	}
	if res2 := list(t, st, WidgetKind, store.ListOptions{}); !sameWidget(res2.Items[0].(*Widget), want) {
		t.Errorf("mutating a List item changed the next List: %+v", res2.Items[0])
	}
}

func (s *suite) testListUnstructured(t *testing.T) {
	st := s.newStore(t)
	mustCreate(t, st, doodad("b", "d2"))
	mustCreate(t, st, doodad("a", "d1"))
	res := list(t, st, DoodadKind, store.ListOptions{})
	if got, want := keysOf(res.Items), []meta.Key{{Namespace: "a", Name: "d1"}, {Namespace: "b", Name: "d2"}}; !slices.Equal(got, want) {
		t.Fatalf("List = %v, want %v", got, want)
	}
	for _, it := range res.Items {
		u, ok := it.(*meta.Unstructured)
		if !ok {
			t.Fatalf("List item is %T, want *meta.Unstructured", it)
		}
		if u.Kind != DoodadKind || !sameJSON(u.Fields["spec"], doodad("", "").Fields["spec"]) {
			t.Errorf("List item kind %q fields %v", u.Kind, u.Fields)
		}
	}
	res.Items[0].(*meta.Unstructured).Fields["spec"].(map[string]any)["size"] = 100
	again := list(t, st, DoodadKind, store.ListOptions{})
	if !sameJSON(again.Items[0].(*meta.Unstructured).Fields["spec"], doodad("", "").Fields["spec"]) {
		t.Errorf("mutating an unstructured List item changed the store")
	}
}

func (s *suite) testListClusterScoped(t *testing.T) {
	st := s.newStore(t)
	for _, n := range []string{"c", "a", "b"} {
		mustCreate(t, st, &Gizmo{ObjectMeta: meta.ObjectMeta{Name: n}})
	}
	res := list(t, st, GizmoKind, store.ListOptions{})
	if got, want := keysOf(res.Items), []meta.Key{{Name: "a"}, {Name: "b"}, {Name: "c"}}; !slices.Equal(got, want) {
		t.Errorf("List = %v, want %v", got, want)
	}
}

// pageAll lists with limit until the last page, checking that every page
// has the first page's revision and at most limit items.
func pageAll(t *testing.T, st store.Store, kind string, opts store.ListOptions, between func(page int)) []meta.Key {
	t.Helper()
	var out []meta.Key
	first := ""
	for page := 0; ; page++ {
		res := list(t, st, kind, opts)
		if first == "" {
			first = res.Revision
		} else if res.Revision != first {
			t.Errorf("page %d has revision %s, want the first page's %s", page, res.Revision, first)
		}
		if int64(len(res.Items)) > opts.Limit {
			t.Fatalf("page %d has %d items, limit %d", page, len(res.Items), opts.Limit)
		}
		out = append(out, keysOf(res.Items)...)
		if res.Continue == "" {
			return out
		}
		if len(res.Items) == 0 {
			t.Fatalf("page %d is empty but has a continue token", page)
		}
		if page > 10000 {
			t.Fatal("paging does not end")
		}
		if between != nil {
			between(page)
		}
		opts.Continue = res.Continue
	}
}

func (s *suite) testListPagination(t *testing.T) {
	st := s.newStore(t)
	var keys []meta.Key
	for i := range 23 {
		keys = append(keys, meta.Key{Namespace: fmt.Sprint("ns", i%3), Name: fmt.Sprintf("w%02d", i)})
	}
	createWidgets(t, st, keys)
	want := sortedKeys(keys)
	for _, limit := range []int64{1, 5, 7, 23, 100} {
		if got := pageAll(t, st, WidgetKind, store.ListOptions{Limit: limit}, nil); !slices.Equal(got, want) {
			t.Errorf("paging by %d gave %v, want %v", limit, got, want)
		}
	}
	res := list(t, st, WidgetKind, store.ListOptions{Limit: 23})
	if res.Continue != "" {
		t.Errorf("a page holding the last item has continue token %q", res.Continue)
	}
}

func (s *suite) testListPaginationWithFilters(t *testing.T) {
	st := s.newStore(t)
	var want []meta.Key
	for i := range 30 {
		w := widget(fmt.Sprint("ns", i%2), fmt.Sprintf("w%02d", i))
		if i%3 == 0 {
			w.Labels["pick"] = "yes"
			if i%2 == 1 {
				want = append(want, meta.KeyOf(w))
			}
		}
		mustCreate(t, st, w)
	}
	sel := labels.SelectorFromSet(labels.Set{"pick": "yes"})
	got := pageAll(t, st, WidgetKind, store.ListOptions{Namespace: "ns1", Selector: sel, Limit: 2}, nil)
	if want = sortedKeys(want); !slices.Equal(got, want) {
		t.Errorf("paging with filters gave %v, want %v", got, want)
	}
}

func (s *suite) testListPaginationStableUnderConcurrentWrites(t *testing.T) {
	st := s.newStore(t)
	var keys []meta.Key
	for i := range 40 {
		keys = append(keys, meta.Key{Namespace: fmt.Sprint("ns", i%2), Name: fmt.Sprintf("w%02d", i)})
	}
	createWidgets(t, st, keys)

	// While paging, a writer updates the listed objects (changing labels
	// and spec) and creates and deletes other objects among them. Its
	// rounds are bounded so that paging ends whatever the backend's speed.
	const rounds = 120
	stop := make(chan struct{})
	progress := make(chan struct{}, 1)
	finished := make(chan struct{})
	var wg sync.WaitGroup
	stopWriter := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer stopWriter()
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(finished)
		var prev *Widget
		for i := range rounds {
			select {
			case <-stop:
				return
			default:
			}
			k := keys[i%len(keys)]
			w := &Widget{}
			if err := st.Get(ctx(t), k, w); err != nil {
				t.Errorf("writer Get %s: %v", k, err)
				return
			}
			w.Spec.Size++
			w.Labels["round"] = fmt.Sprint(i)
			if err := st.Update(ctx(t), w); err != nil {
				t.Errorf("writer Update %s: %v", k, err)
				return
			}
			extra := widget(k.Namespace, fmt.Sprintf("%s-x%d", k.Name, i))
			if err := st.Create(ctx(t), extra); err != nil {
				t.Errorf("writer Create: %v", err)
				return
			}
			if prev != nil {
				if err := st.Delete(ctx(t), prev); err != nil {
					t.Errorf("writer Delete: %v", err)
					return
				}
			}
			prev = extra
			select {
			case progress <- struct{}{}:
			default:
			}
		}
	}()
	// Between pages, wait until the writer has finished a round that
	// started after the previous page (unless it is done).
	waitRound := func(int) {
		for range 2 {
			select {
			case <-progress:
			case <-finished:
				return
			case <-time.After(s.h.EventTimeout):
				t.Fatal("the writer made no progress")
			}
		}
	}
	got := pageAll(t, st, WidgetKind, store.ListOptions{Limit: 3}, waitRound)
	stopWriter()

	seen := map[meta.Key]int{}
	for _, k := range got {
		seen[k]++
	}
	for _, k := range keys {
		if seen[k] != 1 {
			t.Errorf("pre-existing object %s appeared %d times while paging, want once", k, seen[k])
		}
	}
	for k, n := range seen {
		if n > 1 {
			t.Errorf("object %s appeared %d times", k, n)
		}
	}
	if !slices.IsSortedFunc(got, compareKeys) {
		t.Errorf("paged keys are not in order: %v", got)
	}
}

func (s *suite) testListMalformedContinue(t *testing.T) {
	st := s.newStore(t)
	createWidgets(t, st, []meta.Key{{Namespace: "a", Name: "1"}, {Namespace: "a", Name: "2"}})
	for _, tok := range []string{"garbage!", "%%%", "eyJmb28iOjF9", "AAAA", "\x00\xff"} {
		_, err := st.List(ctx(t), WidgetKind, store.ListOptions{Limit: 1, Continue: tok})
		wantCode(t, fmt.Sprintf("List with continue %q", tok), err, errs.InvalidArgument, "continue")
	}
}

func (s *suite) testListEmpty(t *testing.T) {
	st := s.newStore(t)
	res := list(t, st, WidgetKind, store.ListOptions{})
	if len(res.Items) != 0 || res.Continue != "" {
		t.Errorf("List of an empty store = %d items, continue %q", len(res.Items), res.Continue)
	}
	res = list(t, st, WidgetKind, store.ListOptions{Limit: 5})
	if len(res.Items) != 0 || res.Continue != "" {
		t.Errorf("paged List of an empty store = %d items, continue %q", len(res.Items), res.Continue)
	}
}
