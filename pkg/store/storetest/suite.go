package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// Harness tells the suite how to make stores of the backend under test.
type Harness struct {
	// New returns an empty store over scheme (the suite registers its own
	// kinds in scheme first). Release the store with t.Cleanup; the suite
	// may Close it before, so Close must tolerate being called twice.
	New func(t *testing.T, scheme *store.Scheme) store.Store
	// NewSmallHistory returns an empty store whose watch history is small
	// enough that writing ~500 objects of ~4 KiB each makes the first
	// revision expire; nil skips those tests.
	NewSmallHistory func(t *testing.T, scheme *store.Scheme) store.Store
	// EventTimeout bounds waiting for one watch event (default 10 s; oplog
	// watches under -race are slow). Stores must also send a Bookmark to a
	// watch that asked for them within this time.
	EventTimeout time.Duration
}

// DefaultEventTimeout is Harness.EventTimeout's default.
const DefaultEventTimeout = 10 * time.Second

// suite is one run's state.
type suite struct {
	h Harness
}

// Run runs the conformance suite against the backend h makes.
func Run(t *testing.T, h Harness) {
	if h.New == nil {
		t.Fatal("storetest: Harness.New is nil")
	}
	if h.EventTimeout <= 0 {
		h.EventTimeout = DefaultEventTimeout
	}
	s := &suite{h: h}
	groups := []struct {
		name  string
		tests []test
	}{
		{"Create", s.createTests()},
		{"Get", s.getTests()},
		{"Update", s.updateTests()},
		{"UpdateStatus", s.updateStatusTests()},
		{"Delete", s.deleteTests()},
		{"List", s.listTests()},
		{"Watch", s.watchTests()},
		{"Invalid", s.invalidTests()},
		{"Fence", s.fenceTests()},
		{"Close", s.closeTests()},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, tc := range g.tests {
				t.Run(tc.name, tc.run)
			}
		})
	}
}

// test is one named behaviour.
type test struct {
	name string
	run  func(t *testing.T)
}

// newStore returns an empty store over a fresh scheme with the suite's
// kinds.
func (s *suite) newStore(t *testing.T) store.Store {
	t.Helper()
	return s.make(t, s.h.New)
}

func (s *suite) make(t *testing.T, newStore func(*testing.T, *store.Scheme) store.Store) store.Store {
	t.Helper()
	scheme := store.NewScheme()
	if err := RegisterKinds(scheme); err != nil {
		t.Fatalf("register kinds: %v", err)
	}
	st := newStore(t, scheme)
	if st == nil {
		t.Fatal("harness returned a nil store")
	}
	return st
}

// ctx is the context of one test: it ends with the test.
func ctx(t *testing.T) context.Context { return t.Context() }

// widget returns a new Widget in ns with a spec worth checking.
func widget(ns, name string) *Widget {
	return &Widget{
		ObjectMeta: meta.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "demo"}},
		Spec: WidgetSpec{
			Size:   1,
			Color:  "red",
			Tags:   []string{"a", "b"},
			Nested: map[string]string{"k": "v"},
		},
	}
}

// doodad returns a new Doodad in ns.
func doodad(ns, name string) *meta.Unstructured {
	u := &meta.Unstructured{Kind: DoodadKind, ObjectMeta: meta.ObjectMeta{Namespace: ns, Name: name}}
	u.SetField("spec", map[string]any{"size": 1, "list": []any{"x", "y"}, "inner": map[string]any{"k": "v"}})
	return u
}

func mustCreate(t *testing.T, st store.Store, obj meta.Object) {
	t.Helper()
	if err := st.Create(ctx(t), obj); err != nil {
		t.Fatalf("Create %s: %v", meta.KeyOf(obj), err)
	}
}

func mustUpdate(t *testing.T, st store.Store, obj meta.Object) {
	t.Helper()
	if err := st.Update(ctx(t), obj); err != nil {
		t.Fatalf("Update %s: %v", meta.KeyOf(obj), err)
	}
}

func mustGetWidget(t *testing.T, st store.Store, ns, name string) *Widget {
	t.Helper()
	w := &Widget{}
	if err := st.Get(ctx(t), meta.Key{Namespace: ns, Name: name}, w); err != nil {
		t.Fatalf("Get %s/%s: %v", ns, name, err)
	}
	return w
}

// wantCode fails unless err has code and, when field is not "-", names
// field.
func wantCode(t *testing.T, what string, err error, code errs.Code, field string) {
	t.Helper()
	if got := errs.CodeOf(err); got != code {
		t.Fatalf("%s: got error %v (code %v), want code %v", what, err, got, code)
	}
	if field != "-" && errs.FieldOf(err) != field {
		t.Fatalf("%s: error %v names field %q, want %q", what, err, errs.FieldOf(err), field)
	}
}

func rvOf(t *testing.T, obj meta.Object) uint64 {
	t.Helper()
	rv := obj.GetObjectMeta().ResourceVersion
	n, err := strconv.ParseUint(rv, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q of %s is not a decimal number", rv, meta.KeyOf(obj))
	}
	return n
}

// sameJSON reports whether a and b encode to the same JSON value, so that
// numbers compare equal whatever Go type a backend decodes them to.
func sameJSON(a, b any) bool {
	return reflect.DeepEqual(normalJSON(a), normalJSON(b))
}

func normalJSON(v any) any {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("unencodable: %v", err)
	}
	var out any
	if err := json.Unmarshal(data, &out); err != nil {
		return fmt.Sprintf("undecodable: %v", err)
	}
	return out
}

// frozen returns an independent copy of w made through its JSON form, so
// that it stays as it is whatever memory a broken store shares.
func frozen(t *testing.T, w *Widget) *Widget {
	t.Helper()
	data, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	out := &Widget{}
	if err := json.Unmarshal(data, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// frozenWidget is frozen(mustGetWidget(...)): the expected state in tests
// that then try to change the store through memory it must not share.
func frozenWidget(t *testing.T, st store.Store, ns, name string) *Widget {
	t.Helper()
	return frozen(t, mustGetWidget(t, st, ns, name))
}

// sameWidget reports whether two widgets have equal client-visible content
// (metadata, spec, status), with timestamps compared as instants.
func sameWidget(a, b *Widget) bool {
	return sameJSON(a, b)
}
