package meta

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"
)

type dcLabels map[string]string

type dcLeaf struct {
	N int
	S string
}

type dcTree struct {
	ObjectMeta `json:"metadata"`
	Spec       dcSpec `json:"spec"`
	private    []int
}

type dcSpec struct {
	Strings  []string
	Named    dcLabels
	Leaves   []dcLeaf
	LeafPtrs []*dcLeaf
	ByName   map[string]*dcLeaf
	Nested   map[string][]string
	Any      any
	AnyMap   map[string]any
	Array    [2][]int
	Ptr      *dcLeaf
	PtrPtr   **int
	When     *time.Time
	Children []dcTree
	Bytes    []byte
}

func newTree() *dcTree {
	n := 7
	pn := &n
	now := Now()
	return &dcTree{
		ObjectMeta: ObjectMeta{
			Name: "t", Labels: map[string]string{"a": "1"}, Annotations: map[string]string{"b": "2"},
			Finalizers:        []string{"f"},
			OwnerReferences:   []OwnerReference{{Kind: "K", Name: "o", UID: "u"}},
			DeletionTimestamp: &now,
		},
		Spec: dcSpec{
			Strings:  []string{"x", "y"},
			Named:    dcLabels{"k": "v"},
			Leaves:   []dcLeaf{{1, "a"}},
			LeafPtrs: []*dcLeaf{{2, "b"}, nil},
			ByName:   map[string]*dcLeaf{"c": {3, "c"}},
			Nested:   map[string][]string{"l": {"1", "2"}},
			Any:      map[string]any{"deep": []any{map[string]any{"x": "y"}}},
			AnyMap:   map[string]any{"m": map[string]string{"k": "v"}, "s": []int{1}},
			Array:    [2][]int{{1}, {2}},
			Ptr:      &dcLeaf{4, "d"},
			PtrPtr:   &pn,
			When:     &now,
			Children: []dcTree{{Spec: dcSpec{Strings: []string{"child"}}}},
			Bytes:    []byte("bytes"),
		},
		private: []int{1},
	}
}

// mutateAll changes every mutable thing reachable from t.
func mutateAll(t *dcTree) {
	t.Labels["a"] = "changed"
	t.Annotations["new"] = "x"
	t.Finalizers[0] = "changed"
	t.OwnerReferences[0].Name = "changed"
	*t.DeletionTimestamp = t.DeletionTimestamp.Add(time.Hour)
	s := &t.Spec
	s.Strings[0] = "changed"
	s.Named["k"] = "changed"
	s.Leaves[0].N = 100
	s.LeafPtrs[0].N = 100
	s.ByName["c"].N = 100
	s.Nested["l"][0] = "changed"
	s.Any.(map[string]any)["deep"].([]any)[0].(map[string]any)["x"] = "changed"
	s.AnyMap["m"].(map[string]string)["k"] = "changed"
	s.AnyMap["s"].([]int)[0] = 100
	s.Array[0][0] = 100
	s.Ptr.N = 100
	**s.PtrPtr = 100
	*s.When = s.When.Add(time.Hour)
	s.Children[0].Spec.Strings[0] = "changed"
	s.Bytes[0] = 'X'
}

func snapshot(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestDeepCopySharesNothing(t *testing.T) {
	orig := newTree()
	before := snapshot(t, orig)
	cp := DeepCopy(orig)
	if !reflect.DeepEqual(cp, orig) {
		t.Fatalf("copy differs from the original:\n%+v\n%+v", cp, orig)
	}
	mutateAll(cp)
	if after := snapshot(t, orig); after != before {
		t.Errorf("mutating the copy changed the original:\nbefore %s\nafter  %s", before, after)
	}
	// And the other way round.
	cp2 := DeepCopy(orig)
	before2 := snapshot(t, cp2)
	mutateAll(orig)
	if after := snapshot(t, cp2); after != before2 {
		t.Errorf("mutating the original changed the copy")
	}
}

func TestDeepCopyKeepsNilAndEmpty(t *testing.T) {
	orig := &dcTree{Spec: dcSpec{Strings: []string{}, Named: dcLabels{}}}
	cp := DeepCopy(orig)
	if cp.Spec.Strings == nil || cp.Spec.Named == nil {
		t.Error("empty slice or map became nil")
	}
	if cp.Labels != nil || cp.Spec.Leaves != nil || cp.Spec.Ptr != nil || cp.Spec.Any != nil || cp.Spec.ByName != nil {
		t.Errorf("nil became non-nil: %+v", cp)
	}
	var nilTree *dcTree
	if DeepCopy(nilTree) != nil {
		t.Error("DeepCopy of a nil pointer is not nil")
	}
}

func TestDeepCopySharesUnexportedFields(t *testing.T) {
	// Documented: unexported fields are copied by assignment.
	orig := newTree()
	cp := DeepCopy(orig)
	if &cp.private[0] != &orig.private[0] {
		t.Error("unexported slice was not shared as documented")
	}
}

type dcSelfCopier struct {
	ObjectMeta
	calls *int
}

func (c *dcSelfCopier) DeepCopyObject() Object {
	*c.calls++
	return &dcSelfCopier{ObjectMeta: *DeepCopyValue(&c.ObjectMeta), calls: c.calls}
}

func TestDeepCopyUsesDeepCopier(t *testing.T) {
	calls := 0
	o := &dcSelfCopier{calls: &calls}
	_ = DeepCopy(o)
	if calls != 1 {
		t.Errorf("DeepCopyObject called %d times, want 1", calls)
	}
	var obj Object = o
	if _, ok := DeepCopy(obj).(*dcSelfCopier); !ok || calls != 2 {
		t.Errorf("DeepCopy through the interface: calls %d", calls)
	}
}

func TestDeepCopyValue(t *testing.T) {
	m := map[string]any{"a": []any{map[string]any{"b": 1}}, "s": map[string]string{"k": "v"}}
	cp := DeepCopyValue(m)
	cp["a"].([]any)[0].(map[string]any)["b"] = 2
	cp["s"].(map[string]string)["k"] = "changed"
	if m["a"].([]any)[0].(map[string]any)["b"] != 1 || m["s"].(map[string]string)["k"] != "v" {
		t.Errorf("DeepCopyValue shared memory: %v", m)
	}
	var asAny any = []any{[]any{"x"}}
	cpAny := DeepCopyValue(asAny)
	cpAny.([]any)[0].([]any)[0] = "changed"
	if asAny.([]any)[0].([]any)[0] != "x" {
		t.Error("DeepCopyValue of an any shared memory")
	}
	if got := DeepCopyValue(42); got != 42 {
		t.Errorf("DeepCopyValue(42) = %v", got)
	}
	now := Now()
	p := DeepCopyValue(&now)
	if p == &now || !p.Equal(now) {
		t.Error("DeepCopyValue of a pointer returned the same pointer or another value")
	}
	var nilMap map[string]any
	if DeepCopyValue(nilMap) != nil {
		t.Error("DeepCopyValue of a nil map is not nil")
	}
	leaf := dcLeaf{1, "a"}
	if DeepCopyValue(leaf) != leaf {
		t.Error("DeepCopyValue of a plain struct changed it")
	}
}

func TestCopyInto(t *testing.T) {
	src := newTree()
	dst := &dcTree{Spec: dcSpec{Strings: []string{"old"}}}
	CopyInto(dst, src)
	if !reflect.DeepEqual(dst, src) {
		t.Fatalf("CopyInto result differs:\n%+v\n%+v", dst, src)
	}
	before := snapshot(t, src)
	mutateAll(dst)
	if snapshot(t, src) != before {
		t.Error("CopyInto shared memory with the source")
	}

	us := &Unstructured{Kind: "K", Fields: map[string]any{"spec": map[string]any{"a": "b"}}}
	ud := &Unstructured{Kind: "Old", Fields: map[string]any{"other": 1}}
	CopyInto(ud, us)
	if ud.Kind != "K" || len(ud.Fields) != 1 {
		t.Errorf("CopyInto Unstructured = %+v", ud)
	}
	ud.Fields["spec"].(map[string]any)["a"] = "changed"
	if us.Fields["spec"].(map[string]any)["a"] != "b" {
		t.Error("CopyInto Unstructured shared memory")
	}
}

func TestUnstructuredDeepCopyObject(t *testing.T) {
	u := &Unstructured{Kind: "K", APIVersion: "v1", ObjectMeta: ObjectMeta{Name: "n", Labels: map[string]string{"a": "b"}},
		Fields: map[string]any{"spec": map[string]any{"list": []any{"x", map[string]any{"y": true}}}}}
	cp := u.DeepCopyObject().(*Unstructured)
	if !reflect.DeepEqual(cp, u) {
		t.Fatalf("copy differs: %+v", cp)
	}
	cp.Labels["a"] = "changed"
	cp.Fields["spec"].(map[string]any)["list"].([]any)[1].(map[string]any)["y"] = false
	if u.Labels["a"] != "b" || u.Fields["spec"].(map[string]any)["list"].([]any)[1].(map[string]any)["y"] != true {
		t.Error("Unstructured copy shared memory")
	}
}

// TestDeepCopyConcurrentFirstUse copies fresh types from many goroutines
// at once: the copiers of a recursive type are built while others may
// look them up.
func TestDeepCopyConcurrentFirstUse(t *testing.T) {
	type node struct {
		ObjectMeta
		Kids []*node
		Back map[string]*node
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				root := &node{Kids: []*node{{Back: map[string]*node{"x": {}}}}}
				root.Name = fmt.Sprint(g, i)
				cp := DeepCopy(root)
				cp.Kids[0].Back["x"].Name = "changed"
				if root.Kids[0].Back["x"].Name != "" {
					t.Error("copy shared memory")
					return
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkDeepCopy(b *testing.B) {
	tree := newTree()
	b.ReportAllocs()
	for b.Loop() {
		_ = DeepCopy(tree)
	}
}

func TestCopyValueInto(t *testing.T) {
	src := newTree()
	var spec dcTree
	CopyValueInto(reflect.ValueOf(&spec).Elem().FieldByName("Spec"), reflect.ValueOf(src).Elem().FieldByName("Spec"))
	if !reflect.DeepEqual(spec.Spec, src.Spec) || spec.Name != "" {
		t.Fatalf("CopyValueInto of a field copied %+v", spec)
	}
	var dst dcTree
	CopyValueInto(reflect.ValueOf(&dst).Elem(), reflect.ValueOf(src).Elem())
	before := snapshot(t, src)
	mutateAll(&dst)
	if snapshot(t, src) != before {
		t.Error("CopyValueInto shared memory")
	}
	var n, m int = 0, 5
	CopyValueInto(reflect.ValueOf(&n).Elem(), reflect.ValueOf(m))
	if n != 5 {
		t.Errorf("plain value: %d", n)
	}
}

func TestDeepCopyValueOfNilsAllocatesNothing(t *testing.T) {
	var m map[string]int64
	var p *time.Time
	var i any
	allocs := testing.AllocsPerRun(100, func() {
		if DeepCopyValue(m) != nil || DeepCopyValue(p) != nil || DeepCopyValue(i) != nil {
			t.Fatal("nil did not stay nil")
		}
	})
	if allocs != 0 {
		t.Errorf("copying nils allocated %v times", allocs)
	}
	var typedNil *dcLeaf
	var boxed any = typedNil
	if got := DeepCopyValue(boxed); got.(*dcLeaf) != nil {
		t.Errorf("typed nil in an interface became %v", got)
	}
	var boxedLeaf any = &dcLeaf{1, "a"}
	cp := DeepCopyValue(boxedLeaf).(*dcLeaf)
	if cp == boxedLeaf.(*dcLeaf) || *cp != *boxedLeaf.(*dcLeaf) {
		t.Error("pointer in an interface was not copied")
	}
}

func BenchmarkDeepCopyValueStruct(b *testing.B) {
	m := ObjectMeta{Name: "a", Labels: map[string]string{"a": "b"}}
	b.ReportAllocs()
	for b.Loop() {
		_ = DeepCopyValue(m)
	}
}
