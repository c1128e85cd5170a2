package store

import (
	"encoding"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"sync"
	"time"
)

// CheckSize would spend most of a small write encoding the object only to
// learn that it is far below MaxObjectBytes. sizeBound first computes, by
// walking the value, an upper bound of the length of its JSON encoding;
// when the bound is conclusive and within the limit, the encoding is known
// to succeed and to fit. Anything the walk cannot bound exactly enough
// (custom marshalers other than time.Time, json.Number, non-finite floats,
// unsupported kinds, deep nesting) makes it give up, and CheckSize encodes.

// sizeBoundMaxDepth bounds the walk; deeper values are encoded instead
// (json.Marshal reports cycles).
const sizeBoundMaxDepth = 100

// sizeBound returns an upper bound of len(json.Marshal(v)) and true, or
// false when it cannot tell without encoding. A true result also means
// that json.Marshal(v) succeeds.
func sizeBound(v any) (int, bool) {
	rv := reflect.ValueOf(v)
	if !rv.IsValid() {
		return 4, true
	}
	return boundValue(rv, 0)
}

// Per-value worst cases: a number is at most 24 characters in the
// shortest representation encoding/json uses; a string byte becomes at
// most 6 ("\u00XX"); a time is "2006-01-02T15:04:05.999999999-07:00" in
// quotes; a field or entry adds quotes, a colon, a comma and, for the
// ",string" option, quotes around the value.
const (
	boundNumber = 32
	boundTime   = 40
	boundEntry  = 8
)

func boundString(n int) int { return 2 + 6*n }

type sizeField struct {
	index  int
	key    int  // bound of the key and its punctuation
	quoted bool // the ",string" option: the value is encoded as a string
}

type sizeInfo struct {
	opaque bool // the walk cannot bound it: encode
	time   bool // time.Time: fixed length for years 0 to 9999
	bytes  bool // []byte: base64
	fields []sizeField
}

var sizeInfos sync.Map // reflect.Type → *sizeInfo

var (
	typeTime          = reflect.TypeFor[time.Time]()
	typeNumber        = reflect.TypeFor[json.Number]()
	typeMarshaler     = reflect.TypeFor[json.Marshaler]()
	typeTextMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
	typeStringMap     = reflect.TypeFor[map[string]string]()
)

func sizeInfoFor(t reflect.Type) *sizeInfo {
	if i, ok := sizeInfos.Load(t); ok {
		return i.(*sizeInfo)
	}
	info := &sizeInfo{}
	pt := reflect.PointerTo(t)
	switch {
	case t == typeTime:
		info.time = true
	case t.Kind() == reflect.Pointer:
		// A pointer has its element's marshal methods, and a method on
		// *T makes T opaque: walking the element decides.
	case t == typeNumber,
		t.Implements(typeMarshaler), pt.Implements(typeMarshaler),
		t.Implements(typeTextMarshaler), pt.Implements(typeTextMarshaler):
		info.opaque = true
	}
	switch t.Kind() {
	case reflect.Func, reflect.Chan, reflect.Complex64, reflect.Complex128, reflect.UnsafePointer:
		info.opaque = true
	case reflect.Slice:
		info.bytes = t.Elem().Kind() == reflect.Uint8 && !info.opaque && !sizeInfoFor(t.Elem()).opaque
	case reflect.Struct:
		if info.opaque || info.time {
			break
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.Anonymous && !f.IsExported() {
				// encoding/json promotes the exported fields of
				// unexported embedded structs; encode to be exact.
				info.opaque = true
				break
			}
			if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			if name == "" {
				name = f.Name
			}
			quoted := false
			for _, o := range strings.Split(opts, ",") {
				quoted = quoted || o == "string"
			}
			info.fields = append(info.fields, sizeField{index: i, key: boundString(len(name)) + boundEntry, quoted: quoted})
		}
	}
	sizeInfos.Store(t, info)
	return info
}

func boundValue(v reflect.Value, depth int) (int, bool) {
	if depth > sizeBoundMaxDepth {
		return 0, false
	}
	info := sizeInfoFor(v.Type())
	if info.opaque {
		return 0, false
	}
	if info.time {
		if !v.CanInterface() {
			return 0, false
		}
		var y int
		if v.CanAddr() {
			y = v.Addr().Interface().(*time.Time).Year()
		} else {
			y = v.Interface().(time.Time).Year()
		}
		if y < 0 || y > 9999 {
			return 0, false // MarshalJSON fails
		}
		return boundTime, true
	}
	switch v.Kind() {
	case reflect.Bool:
		return 5, true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return boundNumber, true
	case reflect.Float32, reflect.Float64:
		if f := v.Float(); math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, false
		}
		return boundNumber, true
	case reflect.String:
		return boundString(v.Len()), true
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return 4, true
		}
		return boundValue(v.Elem(), depth+1)
	case reflect.Struct:
		n := 2
		for _, f := range info.fields {
			m, ok := boundValue(v.Field(f.index), depth+1)
			if !ok {
				return 0, false
			}
			if f.quoted {
				m = 2 + 2*m // quoting a quoted string at most doubles it
			}
			n += f.key + m
		}
		return n, true
	case reflect.Map:
		return boundMap(v, depth)
	case reflect.Slice:
		if v.IsNil() {
			return 4, true
		}
		if info.bytes {
			return 2 + 4*((v.Len()+2)/3), true
		}
		fallthrough
	case reflect.Array:
		n := 2
		for i := 0; i < v.Len(); i++ {
			m, ok := boundValue(v.Index(i), depth+1)
			if !ok {
				return 0, false
			}
			n += m + 1
		}
		return n, true
	}
	return 0, false
}

func boundMap(v reflect.Value, depth int) (int, bool) {
	if v.IsNil() {
		return 4, true
	}
	t := v.Type()
	if t == typeStringMap && v.CanInterface() {
		n := 2
		for k, e := range v.Interface().(map[string]string) {
			n += boundString(len(k)) + boundString(len(e)) + boundEntry
		}
		return n, true
	}
	kt := t.Key()
	var keyNumber bool
	switch kt.Kind() {
	case reflect.String:
		if sizeInfoFor(kt).opaque {
			return 0, false // TextMarshaler keys
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		keyNumber = true
	default:
		return 0, false
	}
	k, e := reflect.New(kt).Elem(), reflect.New(t.Elem()).Elem()
	n := 2
	for it := v.MapRange(); it.Next(); {
		if keyNumber {
			n += boundNumber + boundEntry
		} else {
			k.SetIterKey(it)
			n += boundString(k.Len()) + boundEntry
		}
		e.SetIterValue(it)
		m, ok := boundValue(e, depth+1)
		if !ok {
			return 0, false
		}
		n += m
	}
	return n, true
}
