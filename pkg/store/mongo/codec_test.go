package mongo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/storetest"
)

// decodeJSON decodes with UseNumber, as the encoder does.
func decodeJSON(t *testing.T, js string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(js))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decode %s: %v", js, err)
	}
	return m
}

// roundTrip converts a JSON object to BSON and back.
func roundTrip(t *testing.T, js string) (bson.Raw, string) {
	t.Helper()
	idx, buf := bsoncore.AppendDocumentStart(nil)
	buf, err := appendJSONObject(buf, decodeJSON(t, js))
	if err != nil {
		t.Fatalf("encode %s: %v", js, err)
	}
	buf, _ = bsoncore.AppendDocumentEnd(buf, idx)
	if err := bson.Raw(buf).Validate(); err != nil {
		t.Fatalf("encoding of %s is not valid BSON: %v", js, err)
	}
	out, err := appendDocJSON(nil, buf, false)
	if err != nil {
		t.Fatalf("decode BSON of %s: %v", js, err)
	}
	if !json.Valid(out) {
		t.Fatalf("BSON of %s read back as invalid JSON %s", js, out)
	}
	return buf, string(out)
}

func TestCodecRoundTripIsExact(t *testing.T) {
	cases := []string{
		`{"a":1,"b":"x","c":true,"d":null,"e":[1,"two",[3],{"four":4}],"f":{"g":{"h":[]}}}`,
		`{"s":"héllo 世界 😀","esc":"q\"b\\n\nt\tr\r","ctl":"\u0001\u001f","html":"<a&b>","ls":"\u2028\u2029"}`,
		`{"int":9223372036854775807,"neg":-9223372036854775808,"zero":0,"f":1.5,"g":-0.25,"h":123456789.125}`,
		`{"big":1e+21,"small":1e-7,"tiny":5e-324,"huge":1.7976931348623157e+308}`,
		`{"t":"2024-01-02T03:04:05Z","tms":"2024-01-02T03:04:05.123Z","t1":"2024-01-02T03:04:05.1Z"}`,
		`{"us":"2024-01-02T03:04:05.123456Z","zone":"2024-01-02T03:04:05+02:00","zeros":"2024-01-02T03:04:05.000Z","date":"2024-01-02","notz":"2024-01-02T03:04:05"}`,
		`{"a.b":1,"$x":2,"%":3,"":4,"x%2Ey":5,"a$b":6,"nul\u0000key":7,"deep":{"k8s.io/name":"v","$set":{"":""}}}`,
		`{"year1":"0001-01-01T00:00:00Z","year9999":"9999-12-31T23:59:59.999Z"}`,
	}
	for _, js := range cases {
		_, out := roundTrip(t, js)
		if !reflect.DeepEqual(decodeJSON(t, out), decodeJSON(t, js)) {
			t.Errorf("round trip changed the document:\n in %s\nout %s", js, out)
		}
	}
}

func TestCodecNormalizesNumbersByValue(t *testing.T) {
	// Numbers keep their value; only their spelling may change.
	cases := map[string]string{
		`{"n":1.0}`:                  `{"n":1}`,
		`{"n":1e3}`:                  `{"n":1000}`,
		`{"n":1E-7}`:                 `{"n":1e-7}`,
		`{"n":9223372036854775808}`:  `{"n":9223372036854776000}`,
		`{"n":-0.0}`:                 `{"n":-0}`,
		`{"n":0.30000000000000004}`:  `{"n":0.30000000000000004}`,
		`{"n":123456789012345678.5}`: `{"n":123456789012345680}`,
	}
	for in, want := range cases {
		_, out := roundTrip(t, in)
		if out != want {
			t.Errorf("%s read back as %s, want %s", in, out, want)
		}
	}
	if _, err := appendJSONValue(nil, "n", json.Number("1e999")); err == nil {
		t.Errorf("a number beyond float64 was accepted")
	}
}

func TestCodecBSONTypes(t *testing.T) {
	raw, _ := roundTrip(t, `{"i":5,"f":2.5,"big":18446744073709551615,"t":"2024-01-02T03:04:05.123Z","us":"2024-01-02T03:04:05.123456Z","a.b":{"$c":1},"":true}`)
	want := map[string]bson.Type{
		"i": bson.TypeInt64, "f": bson.TypeDouble, "big": bson.TypeDouble,
		"t": bson.TypeDateTime, "us": bson.TypeString, "a%2Eb": bson.TypeEmbeddedDocument, "%": bson.TypeBoolean,
	}
	for k, typ := range want {
		v, err := raw.LookupErr(k)
		if err != nil {
			t.Errorf("field %q missing from %s", k, raw)
			continue
		}
		if v.Type != typ {
			t.Errorf("field %q is %v, want %v", k, v.Type, typ)
		}
	}
	if dt := raw.Lookup("t").DateTime(); dt != time.Date(2024, 1, 2, 3, 4, 5, 123e6, time.UTC).UnixMilli() {
		t.Errorf("date = %d", dt)
	}
	if _, err := raw.LookupErr("a%2Eb", "%24c"); err != nil {
		t.Errorf("nested escaped key missing: %v", err)
	}
}

func TestCodecKeysAreSorted(t *testing.T) {
	raw, _ := roundTrip(t, `{"b":1,"a":{"z":1,"y":2},"c":[{"q":1,"p":2}]}`)
	var keys []string
	elems, _ := raw.Elements()
	for _, e := range elems {
		keys = append(keys, e.Key())
	}
	if strings.Join(keys, ",") != "a,b,c" {
		t.Errorf("top-level keys %v, want sorted", keys)
	}
	inner, _ := raw.Lookup("a").Document().Elements()
	if inner[0].Key() != "y" {
		t.Errorf("nested keys not sorted: %s", raw.Lookup("a"))
	}
}

func TestEscapeKeyRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab.$%0\x00/é")
	for range 2000 {
		n := r.IntN(6)
		var b []byte
		for range n {
			b = append(b, alphabet[r.IntN(len(alphabet))])
		}
		k := string(b)
		esc := escapeKey(k)
		if esc == "" || strings.ContainsAny(esc, ".\x00") || strings.HasPrefix(esc, "$") {
			t.Fatalf("escapeKey(%q) = %q, which servers refuse", k, esc)
		}
		if got := string(unescapeKey([]byte(esc))); got != k {
			t.Fatalf("unescapeKey(escapeKey(%q)) = %q", k, got)
		}
	}
}

func TestAppendFloatMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	vals := []float64{0, math.Copysign(0, -1), 1, -1, 0.1, 1e20, 1e21, 1e-6, 1e-7, 123.456, math.MaxFloat64, math.SmallestNonzeroFloat64}
	for range 1000 {
		vals = append(vals, math.Float64frombits(r.Uint64()))
	}
	for _, f := range vals {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			continue
		}
		want, _ := json.Marshal(f)
		if got := appendFloatJSON(nil, f); string(got) != string(want) {
			t.Fatalf("appendFloatJSON(%v) = %s, encoding/json says %s", f, got, want)
		}
	}
}

func TestAppendJSONStringDecodesBack(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 2000 {
		b := make([]byte, r.IntN(12))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		js := appendJSONString(nil, b)
		var got string
		if err := json.Unmarshal(js, &got); err != nil {
			t.Fatalf("appendJSONString(%q) = %s: %v", b, js, err)
		}
		want := strings.ToValidUTF8(string(b), "\uFFFD")
		if utf8.ValidString(string(b)) {
			want = string(b)
		}
		// encoding/json replaces each invalid byte; compare by decoding
		// the standard encoding.
		std, _ := json.Marshal(string(b))
		var stdGot string
		_ = json.Unmarshal(std, &stdGot)
		if got != stdGot {
			t.Fatalf("appendJSONString(%q) decodes to %q, encoding/json gives %q (%q)", b, got, stdGot, want)
		}
	}
}

func randomJSON(r *rand.Rand, depth int) any {
	switch k := r.IntN(9); {
	case k == 0:
		return nil
	case k == 1:
		return r.IntN(2) == 0
	case k == 2:
		return json.Number(fmt.Sprint(r.Int64N(1e12) - 5e11))
	case k == 3:
		return json.Number(fmt.Sprint(r.Float64() * 1e6))
	case k == 4 && depth < 4:
		n := r.IntN(4)
		a := make([]any, n)
		for i := range a {
			a[i] = randomJSON(r, depth+1)
		}
		return a
	case k == 5 && depth < 4:
		m := map[string]any{}
		for range r.IntN(4) {
			m[randomString(r)] = randomJSON(r, depth+1)
		}
		return m
	default:
		return randomString(r)
	}
}

func randomString(r *rand.Rand) string {
	pieces := []string{"a", "Z", "<", ">", "&", "\"", "\\", "\n", "\t", "\x01", "é", "\u2028", "😀", ".", "$", "%", " "}
	var b strings.Builder
	for range r.IntN(6) {
		b.WriteString(pieces[r.IntN(len(pieces))])
	}
	return b.String()
}

func TestJSONLenMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for range 3000 {
		v := randomJSON(r, 0)
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if got := jsonLen(v); got != len(b) {
			t.Fatalf("jsonLen(%#v) = %d, encoding/json writes %d bytes: %s", v, got, len(b), b)
		}
	}
}

func TestRandomDocumentsRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for range 1000 {
		m := map[string]any{}
		for range r.IntN(5) {
			m[randomString(r)] = randomJSON(r, 0)
		}
		js, _ := json.Marshal(m)
		_, out := roundTrip(t, string(js))
		if !sameJSONValue(decodeJSON(t, out), decodeJSON(t, string(js))) {
			t.Fatalf("round trip changed the document:\n in %s\nout %s", js, out)
		}
	}
}

// sameJSONValue compares decoded JSON with numbers by value.
func sameJSONValue(a, b any) bool {
	switch x := a.(type) {
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		fx, _ := x.Float64()
		fy, _ := y.Float64()
		return fx == fy
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if !sameJSONValue(v, y[k]) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !sameJSONValue(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

func TestCanonicalTime(t *testing.T) {
	yes := []string{"2024-01-02T03:04:05Z", "2024-01-02T03:04:05.1Z", "2024-01-02T03:04:05.12Z", "2024-01-02T03:04:05.123Z", "0001-01-01T00:00:00Z"}
	no := []string{"2024-01-02T03:04:05.000Z", "2024-01-02T03:04:05.1230Z", "2024-01-02T03:04:05.1234Z", "2024-01-02T03:04:05+00:00",
		"2024-01-02 03:04:05Z", "2024-13-02T03:04:05Z", "2024-01-02T03:04:05z", "x024-01-02T03:04:05Z", "2024-01-02T03:04:05.Z"}
	for _, s := range yes {
		if _, ok := canonicalTime(s); !ok {
			t.Errorf("canonicalTime(%q) = false, want true", s)
		}
	}
	for _, s := range no {
		if _, ok := canonicalTime(s); ok {
			t.Errorf("canonicalTime(%q) = true, want false", s)
		}
	}
	// What meta.Now makes is always canonical.
	for range 100 {
		js, _ := meta.Now().MarshalJSON()
		if _, ok := canonicalTime(string(js[1 : len(js)-1])); !ok {
			t.Fatalf("meta.Now() = %s is not canonical", js)
		}
	}
}

func TestForeignBSONTypesReadAsJSON(t *testing.T) {
	doc := bson.D{
		{Key: "oid", Value: bson.ObjectID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{Key: "bin", Value: bson.Binary{Subtype: 0, Data: []byte("hi")}},
		{Key: "i32", Value: int32(-7)},
		{Key: "dec", Value: mustDecimal(t, "15")},
		{Key: "re", Value: bson.Regex{Pattern: "a.*", Options: "i"}},
		{Key: "ts", Value: bson.Timestamp{T: 1, I: 2}},
		{Key: "undef", Value: bson.Undefined{}},
		{Key: "min", Value: bson.MinKey{}},
		{Key: "nan", Value: math.NaN()},
		{Key: "js", Value: bson.JavaScript("f()")},
	}
	raw, err := bson.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	out, err := appendDocJSON(nil, raw, false)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"oid":"0102030405060708090a0b0c","bin":"aGk=","i32":-7,"dec":15,"re":"/a.*/i","ts":4294967298,"undef":null,"min":null,"nan":null,"js":"f()"}`
	if string(out) != want {
		t.Errorf("foreign types read as\n%s\nwant\n%s", out, want)
	}
	if _, err := appendDocJSON(nil, []byte{5, 0, 0}, false); err == nil {
		t.Errorf("a truncated document was read")
	}
}

// widgetPair returns a typed Widget and an unstructured object with the
// same JSON.
func widgetPair(t *testing.T) (*storetest.Widget, *meta.Unstructured) {
	t.Helper()
	now := meta.Now()
	w := &storetest.Widget{
		ObjectMeta: meta.ObjectMeta{
			Namespace: "ns1", Name: "w1", UID: "u-1", ResourceVersion: "3", Generation: 2,
			Labels:            map[string]string{"app.kubernetes.io/name": "demo", "tier": "web"},
			Annotations:       map[string]string{"note": "<b>&</b>"},
			Finalizers:        []string{"example.com/f"},
			CreationTimestamp: now,
			DeletionTimestamp: &now,
		},
		Spec: storetest.WidgetSpec{Size: 3, Color: "red", Tags: []string{"a", "b"}, Nested: map[string]string{"k.x": "v"}},
		Status: storetest.WidgetStatus{Phase: "Running", Conditions: []meta.Condition{{
			Type: "Ready", Status: meta.ConditionTrue, LastTransitionTime: now, ObservedGeneration: 2,
		}}},
	}
	js, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	u := &meta.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		t.Fatal(err)
	}
	u.Kind = storetest.WidgetKind
	return w, u
}

func TestTypedAndUnstructuredDocumentsAreIdentical(t *testing.T) {
	w, u := widgetPair(t)
	dw, err := encodeObject(w, "ns1/w1")
	if err != nil {
		t.Fatal(err)
	}
	du, err := encodeObject(u, "ns1/w1")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dw.raw, du.raw) {
		t.Fatalf("documents differ:\n typed %s\n unstructured %s", dw.raw, du.raw)
	}
	raw := dw.raw
	for path, typ := range map[string]bson.Type{
		"metadata.creationTimestamp": bson.TypeDateTime, "metadata.deletionTimestamp": bson.TypeDateTime,
		"metadata.resourceVersion": bson.TypeString, "metadata.generation": bson.TypeInt64,
		"spec.size": bson.TypeInt64, "spec.nested.k%2Ex": bson.TypeString,
		"metadata.labels.app%2Ekubernetes%2Eio/name": bson.TypeString,
	} {
		v, err := raw.LookupErr(strings.Split(path, ".")...)
		if err != nil || v.Type != typ {
			t.Errorf("%s: %v %v, want a %v", path, v.Type, err, typ)
		}
	}
	if id, _ := raw.Lookup("_id").StringValueOK(); id != "ns1/w1" {
		t.Errorf("_id = %q", id)
	}
	elems, _ := raw.Elements()
	var order []string
	for _, e := range elems {
		order = append(order, e.Key())
	}
	if got := strings.Join(order, ","); got != "_id,metadata,spec,status,_capstan" {
		t.Errorf("top-level fields %s", got)
	}
	if _, err := raw.LookupErr("kind"); err == nil {
		t.Errorf("the kind is stored")
	}
	full, _ := json.Marshal(w)
	st, _ := json.Marshal(w.Status)
	if want := int64(len(full) - len(st) - statusOverhead); dw.restBytes != want || du.restBytes != want {
		t.Errorf("restBytes = %d, want %d", dw.restBytes, want)
	}
}

func TestDocumentsReadTypedAndUnstructuredAlike(t *testing.T) {
	scheme := store.NewScheme()
	if err := storetest.RegisterKinds(scheme); err != nil {
		t.Fatal(err)
	}
	kind, _ := scheme.Kind(storetest.WidgetKind)
	w, u := widgetPair(t)
	for name, obj := range map[string]meta.Object{"typed": w, "unstructured": u} {
		d, err := encodeObject(obj, "ns1/w1")
		if err != nil {
			t.Fatal(err)
		}
		gotW := &storetest.Widget{Spec: storetest.WidgetSpec{Color: "stale", Tags: []string{"x"}}}
		if err := decodeObject(d.raw, kind, gotW); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(gotW, w) {
			t.Errorf("%s document read typed:\n got %+v\nwant %+v", name, gotW, w)
		}
		gotU := &meta.Unstructured{Kind: "Other", Fields: map[string]any{"stale": 1}}
		if err := decodeObject(d.raw, kind, gotU); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(gotU, u) {
			t.Errorf("%s document read unstructured:\n got %+v\nwant %+v", name, gotU, u)
		}
		if m, ok := gotU.Fields["spec"].(map[string]any); !ok {
			t.Errorf("unstructured spec is %T, want map[string]any", gotU.Fields["spec"])
		} else if _, ok := m["tags"].([]any); !ok {
			t.Errorf("unstructured spec.tags is %T, want []any", m["tags"])
		}
	}
}

func TestSpecHashIgnoresFieldOrder(t *testing.T) {
	a := &meta.Unstructured{Kind: "Doodad", ObjectMeta: meta.ObjectMeta{Namespace: "n", Name: "a"}}
	a.SetField("spec", map[string]any{"x": 1, "y": map[string]any{"b": 2, "a": 1}})
	b := &meta.Unstructured{Kind: "Doodad", ObjectMeta: meta.ObjectMeta{Namespace: "n", Name: "a", Labels: map[string]string{"l": "v"}}}
	b.SetField("spec", map[string]any{"y": map[string]any{"a": 1, "b": 2}, "x": json.Number("1")})
	c := &meta.Unstructured{Kind: "Doodad", ObjectMeta: meta.ObjectMeta{Namespace: "n", Name: "a"}}
	c.SetField("spec", map[string]any{"x": 2, "y": map[string]any{"a": 1, "b": 2}})
	h := func(o meta.Object) string {
		tr, err := treeOf(o)
		if err != nil {
			t.Fatal(err)
		}
		s, err := tr.specHash()
		if err != nil {
			t.Fatal(err)
		}
		d, _ := tr.build("n/a")
		if d.specHash != s {
			t.Fatalf("specHash %s and the stored hash %s differ", s, d.specHash)
		}
		return s
	}
	if h(a) != h(b) {
		t.Errorf("equal specs hash differently")
	}
	if h(a) == h(c) {
		t.Errorf("different specs hash alike")
	}
}

func mustDecimal(t *testing.T, s string) bson.Decimal128 {
	t.Helper()
	d, err := bson.ParseDecimal128(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
