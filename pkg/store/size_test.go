package store

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
)

type sizeInner struct {
	S   string            `json:"s"`
	N   float64           `json:"n,omitempty"`
	Q   int               `json:"q,string"`
	QS  string            `json:"qs,string"`
	B   []byte            `json:"b"`
	Arr [3]byte           `json:"arr"`
	M   map[int]string    `json:"m"`
	P   *sizeInner        `json:"p,omitempty"`
	Any any               `json:"any"`
	L   map[string]string `json:"l"`
	T   time.Time         `json:"t"`
	TP  *time.Time        `json:"tp"`
	Ign func()            `json:"-"`
}

type sizeObj struct {
	meta.ObjectMeta `json:"metadata"`
	Spec            sizeInner   `json:"spec"`
	List            []sizeInner `json:"list"`
	Plain           struct {
		Exported string
		hidden   string
	}
}

// randString returns strings heavy in characters that JSON escapes.
func randString(r *rand.Rand) string {
	alphabet := []string{"a", "<", ">", "&", `"`, `\`, "\n", "\x01", "\u2028", "é", "\xff", "z"}
	var b strings.Builder
	for range r.IntN(20) {
		b.WriteString(alphabet[r.IntN(len(alphabet))])
	}
	return b.String()
}

func randInner(r *rand.Rand, depth int) sizeInner {
	in := sizeInner{
		S:   randString(r),
		N:   r.NormFloat64() * math.Pow(10, float64(r.IntN(40)-20)),
		Q:   r.IntN(1 << 30),
		QS:  randString(r),
		B:   []byte(randString(r)),
		Arr: [3]byte{1, 200, 3},
		M:   map[int]string{r.IntN(100): randString(r), -5: ""},
		L:   map[string]string{randString(r): randString(r)},
		T:   time.Date(r.IntN(10000), 12, 31, 23, 59, 59, 999999999, time.FixedZone("x", -7*3600)),
	}
	switch r.IntN(4) {
	case 0:
		in.Any = map[string]any{randString(r): []any{randString(r), 1.5, true, nil}}
	case 1:
		in.Any = []string{randString(r)}
	case 2:
		in.Any = r.Int64()
	}
	if depth < 3 && r.IntN(2) == 0 {
		p := randInner(r, depth+1)
		in.P = &p
	}
	if r.IntN(2) == 0 {
		t := in.T
		in.TP = &t
	}
	return in
}

func TestSizeBoundIsAnUpperBound(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		o := &sizeObj{Spec: randInner(r, 0)}
		o.Name = randString(r)
		o.Labels = map[string]string{randString(r): randString(r)}
		o.CreationTimestamp = meta.Now()
		for range r.IntN(3) {
			o.List = append(o.List, randInner(r, 2))
		}
		o.Plain.Exported = randString(r)
		data, err := json.Marshal(o)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		n, ok := sizeBound(o)
		if !ok {
			t.Fatalf("case %d: no bound for an ordinary object", i)
		}
		if n < len(data) {
			t.Fatalf("case %d: bound %d below the encoding's %d bytes: %s", i, n, len(data), data)
		}
	}
}

func TestSizeBoundGivesUpWhereEncodingMayFail(t *testing.T) {
	year10000 := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		v    any
	}{
		{"NaN", map[string]float64{"x": math.NaN()}},
		{"infinity", []any{math.Inf(1)}},
		{"func", map[string]any{"f": func() {}}},
		{"chan", struct{ C chan int }{make(chan int)}},
		{"complex", struct{ C complex128 }{1}},
		{"time past 9999", struct{ T time.Time }{year10000}},
		{"time pointer past 9999", struct{ T *time.Time }{&year10000}},
		{"json.Number", map[string]any{"n": json.Number("12x")}},
		{"custom marshaler", json.RawMessage(`{"a":1}`)},
		{"struct map keys", map[struct{ A int }]int{{1}: 1}},
		{"unexported embedded struct", struct{ sizeHidden }{sizeHidden{A: "x"}}},
	}
	for _, c := range cases {
		if n, ok := sizeBound(c.v); ok {
			t.Errorf("%s: bound %d, want no bound", c.name, n)
		}
	}
	// A nil func field still cannot be encoded; a "-" one is ignored.
	if _, ok := sizeBound(sizeInner{}); !ok {
		t.Errorf(`a func field tagged "-" prevented the bound`)
	}
}

type sizeHidden struct{ A string }

func TestSizeBoundDeepNesting(t *testing.T) {
	type node struct{ Next *node }
	var head *node
	for range sizeBoundMaxDepth + 10 {
		head = &node{Next: head}
	}
	if _, ok := sizeBound(head); ok {
		t.Error("no give-up on nesting deeper than the walk's limit")
	}
}

type sizeKind struct {
	meta.ObjectMeta `json:"metadata"`
	Spec            struct {
		Blob string         `json:"blob"`
		F    float64        `json:"f"`
		Any  map[string]any `json:"any,omitempty"`
	} `json:"spec"`
	Status struct {
		Blob string `json:"blob"`
	} `json:"status"`
}

func TestCheckSize(t *testing.T) {
	base := func() *sizeKind { return &sizeKind{ObjectMeta: meta.ObjectMeta{Name: "a", Namespace: "n"}} }
	small := base()
	if err := CheckSize(small); err != nil {
		t.Errorf("small object: %v", err)
	}
	// The bound assumes every byte may need escaping; for a large object
	// that fits it exceeds the limit, and CheckSize must encode and
	// accept the object.
	large := base()
	large.Spec.Blob = strings.Repeat("a", MaxObjectBytes/2)
	if n, ok := sizeBound(large); !ok || n <= MaxObjectBytes {
		t.Fatalf("test setup: bound %d %v should exceed the limit", n, ok)
	}
	if err := CheckSize(large); err != nil {
		t.Errorf("object of %d bytes: %v", MaxObjectBytes/2, err)
	}
	// Exactly at the limit passes; one byte over fails.
	at := base()
	data, _ := json.Marshal(at)
	at.Spec.Blob = strings.Repeat("a", MaxObjectBytes-len(data))
	if data, _ := json.Marshal(at); len(data) != MaxObjectBytes {
		t.Fatalf("test setup: %d bytes", len(data))
	}
	if err := CheckSize(at); err != nil {
		t.Errorf("object of exactly MaxObjectBytes: %v", err)
	}
	at.Spec.Blob += "a"
	if err := CheckSize(at); !errs.IsInvalidArgument(err) {
		t.Errorf("object one byte over: %v, want InvalidArgument", err)
	}
	nan := base()
	nan.Spec.F = math.NaN()
	if err := CheckSize(nan); !errs.IsInvalidArgument(err) {
		t.Errorf("object with NaN: %v, want InvalidArgument", err)
	}
	fn := base()
	fn.Spec.Any = map[string]any{"f": func() {}}
	if err := CheckSize(fn); !errs.IsInvalidArgument(err) {
		t.Errorf("object with a func: %v, want InvalidArgument", err)
	}
	u := &meta.Unstructured{Kind: "K", ObjectMeta: meta.ObjectMeta{Name: "u"}}
	u.SetField("spec", map[string]any{"blob": strings.Repeat("b", MaxObjectBytes)})
	if err := CheckSize(u); !errs.IsInvalidArgument(err) {
		t.Errorf("oversize unstructured object: %v, want InvalidArgument", err)
	}
}

func BenchmarkCheckSize(b *testing.B) {
	o := &sizeKind{ObjectMeta: meta.ObjectMeta{
		Name: "a", Namespace: "n", UID: "0d4c3c9e-6a9e-4d5e-9d59-3b8e0b1f3c55", ResourceVersion: "12345",
		Labels: map[string]string{"app": "demo", "tier": "web"}, CreationTimestamp: meta.Now(),
	}}
	o.Spec.Blob = strings.Repeat("x", 200)
	b.Run("bound", func(b *testing.B) {
		for b.Loop() {
			if err := CheckSize(o); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("marshal", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(o); err != nil {
				b.Fatal(err)
			}
		}
	})
}
