package mongo

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"slices"
	"sync"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// Fields the store adds to every document: _id, and its own bookkeeping
// in one top-level "_capstan" document. Resources cannot have top-level
// fields starting with "_" (Kind.Validate), so they never clash.
const (
	fieldID = "_id"
	// fieldStore is the store's subdocument.
	fieldStore = "_capstan"
	// keySpecHash holds a hash of the stored spec, so that Update can tell
	// in its filter whether the spec changed (generation).
	keySpecHash = "spec"
	// keyStatusHash holds a hash of the stored status, so that Update can
	// check in its filter that the status it carries is the stored one.
	keyStatusHash = "status"
	// keyRestBytes holds the JSON size of the stored object without its
	// status (and without an unstructured object's kind, which is not
	// stored), so that UpdateStatus can bound the size in its filter.
	keyRestBytes = "rest"

	fieldSpecHash   = fieldStore + "." + keySpecHash
	fieldStatusHash = fieldStore + "." + keyStatusHash
	fieldRestBytes  = fieldStore + "." + keyRestBytes
)

// statusOverhead and kindOverhead are the JSON sizes of `,"status":`
// and `,"kind":` before their values.
const (
	statusOverhead = len(`,"status":`)
	kindOverhead   = len(`,"kind":`)
)

// document is an object encoded for storage.
type document struct {
	raw        bson.Raw
	specHash   string
	statusHash string
	restBytes  int64 // JSON size of the object without its status
}

// objectTree is an object decoded from its JSON into generic values
// (json.Number for numbers), ready to be encoded as a document.
type objectTree struct {
	top          map[string]any
	unstructured bool
}

// treeOf encodes obj as JSON and decodes that into a tree. An object that
// cannot be encoded is errs.InvalidArgument.
func treeOf(obj meta.Object) (*objectTree, error) {
	js, err := json.Marshal(obj)
	if err != nil {
		return nil, errs.Wrap(errs.InvalidArgument, err, "object cannot be encoded")
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var top map[string]any
	if err := dec.Decode(&top); err != nil || top == nil {
		return nil, errs.Wrap(errs.InvalidArgument, err, "object does not encode to a JSON object")
	}
	_, unstructured := obj.(*meta.Unstructured)
	return &objectTree{top: top, unstructured: unstructured}, nil
}

// setMeta sets a metadata field of the tree.
func (t *objectTree) setMeta(key string, v any) {
	m, ok := t.top["metadata"].(map[string]any)
	if !ok {
		m = map[string]any{}
		t.top["metadata"] = m
	}
	m[key] = v
}

// specHash is the hash of the spec as build stores it.
func (t *objectTree) specHash() (string, error) {
	v, ok := t.top["spec"]
	if !ok {
		return hashBytes(nil), nil
	}
	el, err := appendJSONValue(nil, "spec", v)
	if err != nil {
		return "", errs.Wrap(errs.InvalidArgument, err, "field spec")
	}
	return hashBytes(el), nil
}

// build encodes the tree as the document stored under id: _id, then
// metadata, spec and status, then the other fields sorted, then the
// store's hidden fields. Every object key below the top level is sorted,
// so typed and unstructured objects with the same JSON give identical
// documents. An unstructured object's kind is not stored: the collection
// is the kind.
func (t *objectTree) build(id string) (*document, error) {
	d := &document{restBytes: int64(jsonLen(t.top))}
	if st, ok := t.top["status"]; ok {
		d.restBytes -= int64(statusOverhead + jsonLen(st))
	}
	if k, ok := t.top["kind"]; ok && t.unstructured {
		d.restBytes -= int64(kindOverhead + jsonLen(k))
	}
	buf := make([]byte, 0, int(d.restBytes)+int(d.restBytes)/4+256)
	idx, buf := bsoncore.AppendDocumentStart(buf)
	buf = bsoncore.AppendStringElement(buf, fieldID, id)
	var specEl, statusEl []byte
	var err error
	for _, name := range [...]string{"metadata", "spec", "status"} {
		v, ok := t.top[name]
		if !ok {
			continue
		}
		start := len(buf)
		if buf, err = appendJSONValue(buf, name, v); err != nil {
			return nil, errs.Wrap(errs.InvalidArgument, err, "field %s", name)
		}
		switch name {
		case "spec":
			specEl = buf[start:]
		case "status":
			statusEl = buf[start:]
		}
	}
	for _, k := range sortedKeys(t.top) {
		switch k {
		case "metadata", "spec", "status":
			continue
		case "kind":
			if t.unstructured {
				continue
			}
		}
		if buf, err = appendJSONValue(buf, escapeKey(k), t.top[k]); err != nil {
			return nil, errs.Wrap(errs.InvalidArgument, err, "field %s", k)
		}
	}
	d.specHash = hashBytes(specEl)
	d.statusHash = hashBytes(statusEl)
	sidx, buf := bsoncore.AppendDocumentElementStart(buf, fieldStore)
	buf = bsoncore.AppendStringElement(buf, keySpecHash, d.specHash)
	buf = bsoncore.AppendStringElement(buf, keyStatusHash, d.statusHash)
	buf = bsoncore.AppendInt64Element(buf, keyRestBytes, d.restBytes)
	if buf, err = bsoncore.AppendDocumentEnd(buf, sidx); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "build document")
	}
	if buf, err = bsoncore.AppendDocumentEnd(buf, idx); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "build document")
	}
	d.raw = buf
	return d, nil
}

// encodeObject encodes obj as the document stored under id.
func encodeObject(obj meta.Object, id string) (*document, error) {
	t, err := treeOf(obj)
	if err != nil {
		return nil, err
	}
	return t.build(id)
}

// encodedStatus is an object's status encoded for UpdateStatus.
type encodedStatus struct {
	value     bson.RawValue // the BSON value of "status"
	present   bool          // the object has a status
	hash      string        // as build computes it
	jsonBytes int           // its JSON size with statusOverhead; 0 when absent
}

// encodeStatus encodes obj's status alone.
func encodeStatus(obj meta.Object) (encodedStatus, error) {
	t, err := treeOf(obj)
	if err != nil {
		return encodedStatus{}, err
	}
	st, ok := t.top["status"]
	if !ok {
		return encodedStatus{hash: hashBytes(nil)}, nil
	}
	el, err := appendJSONValue(nil, "status", st)
	if err != nil {
		return encodedStatus{}, errs.Wrap(errs.InvalidArgument, err, "field status")
	}
	v := bsoncore.Element(el).Value()
	return encodedStatus{
		value:     bson.RawValue{Type: bson.Type(v.Type), Value: v.Data},
		present:   true,
		hash:      hashBytes(el),
		jsonBytes: statusOverhead + jsonLen(st),
	}, nil
}

// hashBytes is the hash the store keeps of a spec or status element (the
// empty input stands for an absent one).
func hashBytes(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

var jsonBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// decodeObject decodes a stored document into obj, an object of kind:
// every field is replaced.
func decodeObject(raw bson.Raw, kind *store.Kind, obj meta.Object) error {
	bp := jsonBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 1<<20 {
			jsonBufs.Put(bp)
		}
	}()
	js, err := appendDocJSON((*bp)[:0], raw, true)
	if err != nil {
		return errs.Wrap(errs.DataLoss, err, "stored %s document is not valid BSON", kind.Name)
	}
	*bp = js
	if u, ok := obj.(*meta.Unstructured); ok {
		if err := u.UnmarshalJSON(js); err != nil {
			return errs.Wrap(errs.DataLoss, err, "stored %s document cannot be decoded", kind.Name)
		}
		u.Kind = kind.Name
		return nil
	}
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return errs.Invalid("kind", "%T is not a pointer to an object", obj)
	}
	v.Elem().SetZero()
	if err := json.Unmarshal(js, obj); err != nil {
		return errs.Wrap(errs.DataLoss, err, "stored %s document cannot be decoded into %T", kind.Name, obj)
	}
	return nil
}

// storedMeta returns the uid and resourceVersion of a stored document.
func storedMeta(raw bson.Raw) (uid, rv string) {
	m, ok := raw.Lookup("metadata").DocumentOK()
	if !ok {
		return "", ""
	}
	uid, _ = m.Lookup("uid").StringValueOK()
	rv, _ = m.Lookup("resourceVersion").StringValueOK()
	return uid, rv
}

// timeValue returns how a timestamp of obj's metadata is stored (a date,
// or a string when it is not a canonical UTC millisecond time), for use in
// filters.
func timeValue(js []byte) (any, bool) {
	var s string
	if err := json.Unmarshal(js, &s); err != nil {
		return nil, false
	}
	if ms, ok := canonicalTime(s); ok {
		return bson.DateTime(ms), true
	}
	return s, true
}

// sortedKeys returns m's keys sorted.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
