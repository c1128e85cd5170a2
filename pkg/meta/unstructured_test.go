package meta

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/capstanhq/capstan/pkg/errs"
)

func wantInvalid(t *testing.T, what string, err error, field string) {
	t.Helper()
	if !errs.IsInvalidArgument(err) {
		t.Fatalf("%s: %v, want InvalidArgument", what, err)
	}
	if got := errs.FieldOf(err); got != field {
		t.Fatalf("%s: %v names field %q, want %q", what, err, got, field)
	}
}

func TestUnstructuredRoundTrip(t *testing.T) {
	doc := `{"apiVersion":"capstan.dev/v1","kind":"Widget",
		"metadata":{"name":"w","namespace":"ns","labels":{"a":"b"},"creationTimestamp":"2024-05-06T07:08:09.123Z",
			"ownerReferences":[{"kind":"Flow","name":"f","uid":"u","controller":true}]},
		"spec":{"size":3,"ratio":0.5,"big":12345678901234567890,"list":[1,"x",null,{"k":true}]},
		"status":{"phase":"Running"}}`
	var u Unstructured
	if err := json.Unmarshal([]byte(doc), &u); err != nil {
		t.Fatal(err)
	}
	if u.Kind != "Widget" || u.APIVersion != "capstan.dev/v1" || u.Name != "w" || u.Namespace != "ns" ||
		u.Labels["a"] != "b" || u.CreationTimestamp.Year() != 2024 || !u.OwnerReferences[0].Controller {
		t.Fatalf("decoded %+v", u)
	}
	spec, _ := u.Field("spec")
	sm := spec.(map[string]any)
	if sm["size"] != json.Number("3") || sm["big"] != json.Number("12345678901234567890") {
		t.Errorf("numbers must stay json.Number, exactly: %#v", sm)
	}
	if _, ok := u.Fields["metadata"]; ok {
		t.Error("metadata leaked into Fields")
	}
	if _, ok := u.Fields["kind"]; ok {
		t.Error("kind leaked into Fields")
	}
	out, err := json.Marshal(&u)
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	_ = json.Unmarshal([]byte(doc), &a)
	_ = json.Unmarshal(out, &b)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("round trip changed the document:\n%s\n%s", doc, out)
	}
}

func TestUnstructuredStrictDecoding(t *testing.T) {
	cases := []struct {
		name, doc, field string
	}{
		{"not JSON", `{"kind":`, ""},
		{"an array", `[1]`, ""},
		{"a string", `"x"`, ""},
		{"null", `null`, ""},
		{"kind a number", `{"kind":1}`, "kind"},
		{"kind an object", `{"kind":{}}`, "kind"},
		{"apiVersion a bool", `{"apiVersion":true}`, "apiVersion"},
		{"metadata a string", `{"metadata":"x"}`, "metadata"},
		{"metadata an array", `{"metadata":[]}`, "metadata"},
		{"name a number", `{"metadata":{"name":1}}`, "metadata.name"},
		{"generation a string", `{"metadata":{"generation":"1"}}`, "metadata.generation"},
		{"labels a list", `{"metadata":{"labels":["a"]}}`, "metadata.labels"},
		{"label value a number", `{"metadata":{"labels":{"a":1}}}`, "metadata.labels"},
		{"unknown metadata field", `{"metadata":{"name":"a","nmae":"b"}}`, "metadata.nmae"},
		{"unknown owner reference field", `{"metadata":{"ownerReferences":[{"kind":"K"},{"kind":"K","nmae":"x"}]}}`, "metadata.ownerReferences[1].nmae"},
		{"owner reference controller a string", `{"metadata":{"ownerReferences":[{"controller":"yes"}]}}`, "metadata.ownerReferences.controller"},
		{"bad timestamp", `{"metadata":{"creationTimestamp":"yesterday"}}`, "metadata"},
		{"trailing data in metadata", `{"metadata":{} }x`, ""},
	}
	for _, c := range cases {
		var u Unstructured
		wantInvalid(t, c.name, u.UnmarshalJSON([]byte(c.doc)), c.field)
	}
}

func TestDecodeStrict(t *testing.T) {
	type inner struct {
		A int `json:"a"`
	}
	type outer struct {
		ObjectMeta `json:"metadata"`
		Spec       struct {
			Items  []inner          `json:"items"`
			ByName map[string]inner `json:"byName"`
			Ptr    *inner           `json:"ptr"`
		} `json:"spec"`
	}
	cases := []struct {
		name, doc, field string
	}{
		{"unknown top-level", `{"nope":1}`, "nope"},
		{"unknown in a slice element", `{"spec":{"items":[{"a":1},{"b":2}]}}`, "spec.items[1].b"},
		{"unknown in a map value", `{"spec":{"byName":{"x":{"a":1,"c":3}}}}`, "spec.byName[x].c"},
		{"unknown behind a pointer", `{"spec":{"ptr":{"d":1}}}`, "spec.ptr.d"},
		{"wrong type deep", `{"spec":{"items":[{"a":"x"}]}}`, "spec.items.a"},
		{"trailing data", `{} {}`, ""},
		{"syntax error", `{"spec":}`, ""},
	}
	for _, c := range cases {
		var o outer
		wantInvalid(t, c.name, DecodeStrict([]byte(c.doc), &o), c.field)
	}
	var o outer
	if err := DecodeStrict([]byte(`{"metadata":{"name":"x"},"spec":{"items":[{"a":1}],"Ptr":{"a":2}}}`), &o); err != nil {
		t.Errorf("valid document (field names match case-insensitively): %v", err)
	}
	if o.Spec.Ptr == nil || o.Spec.Ptr.A != 2 {
		t.Errorf("decoded %+v", o.Spec)
	}
}

func TestDecodeYAMLObjects(t *testing.T) {
	stream := `# leading comment
---
kind: Widget
metadata:
  name: a
  namespace: ns
spec:
  size: 3
---
# only a comment
---

---
{"kind": "Gizmo", "metadata": {"name": "g"}}
...
`
	// YAML's document end marker "..." is not a separator; drop it.
	stream = strings.Replace(stream, "...\n", "", 1)
	objs, err := DecodeYAMLObjects(strings.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].Kind != "Widget" || objs[0].Namespace != "ns" || objs[1].Kind != "Gizmo" || objs[1].Name != "g" {
		t.Fatalf("decoded %+v", objs)
	}
	spec, _ := objs[0].Field("spec")
	if n := spec.(map[string]any)["size"]; n != json.Number("3") {
		t.Errorf("size = %#v, want json.Number 3", n)
	}
}

func TestDecodeYAMLObjectsErrors(t *testing.T) {
	cases := []struct {
		name, stream, field string
		code                errs.Code
	}{
		{"malformed YAML", "kind: W\nmetadata: [\n", "", errs.InvalidArgument},
		{"duplicate key", "kind: W\nkind: X\n", "", errs.InvalidArgument},
		{"missing kind", "metadata:\n  name: a\n", "document[0].kind", errs.InvalidArgument},
		{"second document's metadata", "kind: W\n---\nkind: W\nmetadata: x\n", "document[1].metadata", errs.InvalidArgument},
		{"unknown metadata field", "kind: W\nmetadata:\n  name: a\n  nmae: b\n", "document[0].metadata.nmae", errs.InvalidArgument},
		{"kind a list", "kind: [a]\n", "document[0].kind", errs.InvalidArgument},
		{"index counts empty documents", "---\n---\nkind: 1\n", "document[2].kind", errs.InvalidArgument},
	}
	for _, c := range cases {
		_, err := DecodeYAMLObjects(strings.NewReader(c.stream))
		if errs.CodeOf(err) != c.code || errs.FieldOf(err) != c.field {
			t.Errorf("%s: %v (field %q), want %v on %q", c.name, err, errs.FieldOf(err), c.code, c.field)
		}
		if c.name == "malformed YAML" && !strings.Contains(err.Error(), "document 0") {
			t.Errorf("malformed YAML error %q does not name the document", err)
		}
	}
	_, err := DecodeYAMLObjects(failingReader{})
	if !errs.IsUnavailable(err) {
		t.Errorf("read error: %v, want Unavailable", err)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestUnstructuredFieldAccess(t *testing.T) {
	var u Unstructured
	if _, ok := u.Field("spec"); ok {
		t.Error("field of an empty object")
	}
	u.SetField("spec", 1)
	if v, ok := u.Field("spec"); !ok || v != 1 {
		t.Errorf("Field after SetField = %v %v", v, ok)
	}
	if u.GetObjectMeta() != &u.ObjectMeta {
		t.Error("GetObjectMeta does not return the embedded metadata")
	}
}
