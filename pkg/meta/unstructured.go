package meta

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/capstanhq/capstan/pkg/errs"
)

// Unstructured is an object of any kind held as generic data: typed
// metadata, the kind, and every other top-level field (spec, status, …) as
// decoded JSON (maps, slices, strings, bools, json.Number, nil). Tools use
// it for kinds they have no Go type for. Its JSON form is the resource's
// YAML/JSON form:
//
//	{"kind": "Widget", "metadata": {...}, "spec": {...}, "status": {...}}
type Unstructured struct {
	// ObjectMeta is the object's metadata ("metadata").
	ObjectMeta
	// Kind is the object's kind ("kind").
	Kind string
	// APIVersion is kept when present ("apiVersion"); Capstan does not
	// interpret it.
	APIVersion string
	// Fields holds every other top-level field by name.
	Fields map[string]any
}

// DeepCopyObject implements DeepCopier.
func (u *Unstructured) DeepCopyObject() Object {
	c := &Unstructured{Kind: u.Kind, APIVersion: u.APIVersion}
	c.ObjectMeta = DeepCopyValue(u.ObjectMeta)
	c.Fields = DeepCopyValue(u.Fields)
	return c
}

// Field returns the top-level field name ("spec", "status", …).
func (u *Unstructured) Field(name string) (any, bool) {
	v, ok := u.Fields[name]
	return v, ok
}

// SetField sets a top-level field.
func (u *Unstructured) SetField(name string, v any) {
	if u.Fields == nil {
		u.Fields = map[string]any{}
	}
	u.Fields[name] = v
}

// MarshalJSON implements json.Marshaler.
func (u *Unstructured) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(u.Fields)+3)
	for k, v := range u.Fields {
		m[k] = v
	}
	if u.Kind != "" {
		m["kind"] = u.Kind
	}
	if u.APIVersion != "" {
		m["apiVersion"] = u.APIVersion
	}
	m["metadata"] = &u.ObjectMeta
	return json.Marshal(m)
}

// UnmarshalJSON implements json.Unmarshaler. It is strict: the document must
// be a JSON object, kind and apiVersion strings, metadata an object with
// known fields of the right types; errors are InvalidArgument naming the
// field.
func (u *Unstructured) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var top map[string]json.RawMessage
	if err := dec.Decode(&top); err != nil {
		return errs.Wrap(errs.InvalidArgument, err, "object is not a JSON object")
	}
	if top == nil {
		return errs.Invalid("", "object is null")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errs.Invalid("", "unexpected data after the object")
	}
	*u = Unstructured{Fields: make(map[string]any, len(top))}
	for k, raw := range top {
		switch k {
		case "kind", "apiVersion":
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return errs.Invalid(k, "must be a string, got %s", abbreviate(raw))
			}
			if k == "kind" {
				u.Kind = s
			} else {
				u.APIVersion = s
			}
		case "metadata":
			if err := decodeStrict(raw, &u.ObjectMeta); err != nil {
				return errs.WithField(err, "metadata")
			}
		default:
			d := json.NewDecoder(bytes.NewReader(raw))
			d.UseNumber()
			var v any
			if err := d.Decode(&v); err != nil {
				return errs.Invalid(k, "%v", err)
			}
			u.Fields[k] = v
		}
	}
	return nil
}

// DecodeStrict decodes JSON into v, rejecting unknown fields and trailing
// data; errors are InvalidArgument naming the field path.
func DecodeStrict(data []byte, v any) error { return decodeStrict(data, v) }

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			// encoding/json names only the key; find where it is.
			name = strings.Trim(name, `"`)
			if path := unknownFieldPath(data, reflect.TypeOf(v), name); path != "" {
				return errs.Invalid(path, "unknown field")
			}
		}
		return jsonFieldError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errs.Invalid("", "unexpected data after the object")
	}
	return nil
}

// jsonFieldError turns encoding/json's errors into InvalidArgument errors
// with a field path.
func jsonFieldError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return errs.Invalid(te.Field, "cannot use %s as %s", te.Value, te.Type)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return errs.Invalid("", "malformed JSON at offset %d: %v", se.Offset, err)
	}
	if msg := err.Error(); strings.HasPrefix(msg, "json: unknown field ") {
		return errs.Invalid(strings.Trim(strings.TrimPrefix(msg, "json: unknown field "), `"`), "unknown field")
	}
	var ce interface{ ErrorCode() errs.Code }
	if errors.As(err, &ce) {
		return err
	}
	var e *errs.Error
	if errors.As(err, &e) {
		return err
	}
	return errs.Wrap(errs.InvalidArgument, err, "invalid object")
}

func abbreviate(raw []byte) string {
	if len(raw) > 40 {
		return string(raw[:40]) + "…"
	}
	return string(raw)
}

// DecodeYAMLObjects decodes a stream of YAML (or JSON) documents separated
// by "---" lines into unstructured objects. Empty documents are skipped.
// Errors name the document (its index, from 0) and the field.
func DecodeYAMLObjects(r io.Reader) ([]*Unstructured, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "read objects")
	}
	var out []*Unstructured
	for i, doc := range splitYAMLDocuments(string(data)) {
		if strings.TrimSpace(stripYAMLComments(doc)) == "" {
			continue
		}
		js, err := yaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			return nil, errs.Wrap(errs.InvalidArgument, err, "document %d: malformed YAML", i)
		}
		u := &Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			return nil, errs.WithField(err, fmt.Sprintf("document[%d]", i))
		}
		if u.Kind == "" {
			return nil, errs.Invalid(fmt.Sprintf("document[%d].kind", i), "kind is required")
		}
		out = append(out, u)
	}
	return out, nil
}

func splitYAMLDocuments(s string) []string {
	var docs []string
	var cur strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		if strings.TrimRight(line, " \t\r\n") == "---" {
			docs = append(docs, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteString(line)
	}
	return append(docs, cur.String())
}

func stripYAMLComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// unknownFieldPath returns the path in data (a JSON document decoded into
// a value of type t) of a key named name that t has no field for, or ""
// if there is none.
func unknownFieldPath(data []byte, t reflect.Type, name string) string {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if dec.Decode(&doc) != nil {
		return ""
	}
	return findUnknown(doc, t, name, "")
}

var typeUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

func findUnknown(doc any, t reflect.Type, name, path string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(typeUnmarshaler) {
		return ""
	}
	join := func(key string) string {
		if path == "" {
			return key
		}
		return path + "." + key
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := doc.(map[string]any)
		if !ok {
			return ""
		}
		fields := jsonFields(t)
		for _, k := range slices.Sorted(maps.Keys(m)) {
			f, ok := fields[k]
			if !ok {
				for fk, ff := range fields {
					if strings.EqualFold(fk, k) {
						f, ok = ff, true
						break
					}
				}
			}
			if !ok {
				if k == name {
					return join(k)
				}
				continue
			}
			if p := findUnknown(m[k], f, name, join(k)); p != "" {
				return p
			}
		}
	case reflect.Map:
		m, ok := doc.(map[string]any)
		if !ok {
			return ""
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if p := findUnknown(m[k], t.Elem(), name, path+"["+k+"]"); p != "" {
				return p
			}
		}
	case reflect.Slice, reflect.Array:
		l, ok := doc.([]any)
		if !ok {
			return ""
		}
		for i, e := range l {
			if p := findUnknown(e, t.Elem(), name, fmt.Sprintf("%s[%d]", path, i)); p != "" {
				return p
			}
		}
	}
	return ""
}

// jsonFields maps the JSON names of struct type t's fields, including
// those promoted from embedded structs without a name, to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			for k, v := range jsonFields(ft) {
				if _, dup := out[k]; !dup {
					out[k] = v
				}
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}
