package meta

import (
	"maps"
	"reflect"
	"slices"
	"sync"
)

// DeepCopier is implemented by objects that copy themselves faster than the
// reflective copy (for example with generated code).
type DeepCopier interface {
	// DeepCopyObject returns a copy that shares no mutable memory with the
	// receiver.
	DeepCopyObject() Object
}

// DeepCopy returns a copy of obj that shares no mutable memory with it:
// maps, slices, pointers and interfaces are copied recursively. It uses
// obj's DeepCopyObject when it has one. Unexported fields of reference type
// are shared (they are invisible to reflection); resource types should not
// have them.
func DeepCopy[T Object](obj T) T {
	if dc, ok := any(obj).(DeepCopier); ok {
		return dc.DeepCopyObject().(T)
	}
	v := reflect.ValueOf(obj)
	if v.Kind() == reflect.Pointer && v.IsNil() {
		return obj
	}
	return copyValue(v).Interface().(T)
}

// DeepCopyValue copies any value the way DeepCopy copies objects.
func DeepCopyValue[T any](v T) T {
	switch x := any(v).(type) {
	case map[string]any:
		return any(copyJSONMap(x)).(T)
	case []any:
		return any(copyJSONSlice(x)).(T)
	case map[string]string:
		return any(maps.Clone(x)).(T)
	}
	t := reflect.TypeFor[T]()
	c := copierFor(t)
	if c == nil {
		return v
	}
	src := reflect.ValueOf(any(v)) // no allocation for maps and pointers
	if !src.IsValid() {
		return v // a nil interface
	}
	if t.Kind() == reflect.Interface {
		// src holds the dynamic value; copy that.
		if src.Kind() == reflect.Pointer && src.IsNil() {
			return v
		}
		return copyValue(src).Interface().(T)
	}
	switch src.Kind() {
	case reflect.Pointer, reflect.Map:
		if src.IsNil() {
			return v
		}
		n := reflect.New(t).Elem()
		c.fn(n, src)
		return n.Interface().(T) // pointer-shaped: no allocation
	case reflect.Slice:
		if src.IsNil() {
			return v
		}
	}
	var out T
	c.fn(reflect.ValueOf(&out).Elem(), src)
	return out
}

// CopyInto deep-copies src into dst, which must be of the same type; it is
// how stores fill a caller's object without sharing memory with their own.
func CopyInto(dst, src Object) {
	if du, ok := dst.(*Unstructured); ok {
		*du = *src.(*Unstructured).DeepCopyObject().(*Unstructured)
		return
	}
	dv := reflect.ValueOf(dst).Elem()
	sv := reflect.ValueOf(src).Elem()
	if c := copierFor(dv.Type()); c != nil {
		c.fn(dv, sv)
		return
	}
	dv.Set(sv)
}

// CopyValueInto sets dst, which must be settable, to a deep copy of src,
// which must have dst's type. It is DeepCopyValue for code that holds
// reflect.Values, such as a store copying one field of an object.
func CopyValueInto(dst, src reflect.Value) {
	if c := copierFor(dst.Type()); c != nil {
		c.fn(dst, src)
		return
	}
	dst.Set(src)
}

// copyValue returns a deep copy of v.
func copyValue(v reflect.Value) reflect.Value {
	c := copierFor(v.Type())
	if c == nil {
		return v
	}
	n := reflect.New(v.Type()).Elem()
	c.fn(n, v)
	return n
}

// needsCopy reports whether a value of type t holds references that an
// assignment would share.
func needsCopy(t reflect.Type) bool { return copierFor(t) != nil }

// copier deep-copies values of one type: fn sets dst (settable) to a deep
// copy of src. Copiers are built once per type and cached.
type copier struct {
	fn func(dst, src reflect.Value)
}

var (
	copiersMu sync.Mutex
	copiers   sync.Map // reflect.Type → *copier; nil when assignment copies
)

// copierFor returns the copier of t, or nil when assignment copies t.
func copierFor(t reflect.Type) *copier {
	if c, ok := copiers.Load(t); ok {
		return c.(*copier)
	}
	copiersMu.Lock()
	defer copiersMu.Unlock()
	built := map[reflect.Type]*copier{}
	c := buildCopier(t, built)
	// Publish only complete copiers: those of a recursive type refer to
	// each other and are finished together.
	for bt, bc := range built {
		copiers.Store(bt, bc)
	}
	return c
}

// buildCopier builds t's copier and those of the types it contains into
// built; building holds copiersMu. A type is in built from the start of its
// build, so that recursive types refer to their own copier. Every type on
// a cycle needs a copier (a cycle passes through a pointer, map or slice),
// so no placeholder handed out on the way down turns out to be nil.
func buildCopier(t reflect.Type, built map[reflect.Type]*copier) *copier {
	if c, ok := copiers.Load(t); ok {
		return c.(*copier)
	}
	if c, ok := built[t]; ok {
		return c
	}
	c := &copier{}
	built[t] = c
	if !makeCopier(t, c, built) {
		c = nil
		built[t] = nil
	}
	return c
}

var (
	typeStringMap = reflect.TypeFor[map[string]string]()
	typeJSONMap   = reflect.TypeFor[map[string]any]()
	typeJSONSlice = reflect.TypeFor[[]any]()
	typeStrings   = reflect.TypeFor[[]string]()
)

// makeCopier sets c.fn for t and reports whether t needs more than
// assignment.
func makeCopier(t reflect.Type, c *copier, built map[reflect.Type]*copier) bool {
	switch t.Kind() {
	case reflect.Pointer:
		elem := buildCopier(t.Elem(), built)
		et := t.Elem()
		c.fn = func(dst, src reflect.Value) {
			if src.IsNil() {
				dst.SetZero()
				return
			}
			p := reflect.New(et)
			if elem != nil {
				elem.fn(p.Elem(), src.Elem())
			} else {
				p.Elem().Set(src.Elem())
			}
			dst.Set(p)
		}
	case reflect.Map:
		switch t {
		case typeStringMap:
			c.fn = func(dst, src reflect.Value) {
				dst.Set(reflect.ValueOf(maps.Clone(src.Interface().(map[string]string))))
			}
			return true
		case typeJSONMap:
			c.fn = func(dst, src reflect.Value) {
				dst.Set(reflect.ValueOf(copyJSONMap(src.Interface().(map[string]any))))
			}
			return true
		}
		elem := buildCopier(t.Elem(), built)
		kt, et := t.Key(), t.Elem()
		c.fn = func(dst, src reflect.Value) {
			if src.IsNil() {
				dst.SetZero()
				return
			}
			n := reflect.MakeMapWithSize(t, src.Len())
			k, v := reflect.New(kt).Elem(), reflect.New(et).Elem()
			var cv reflect.Value
			if elem != nil {
				cv = reflect.New(et).Elem()
			}
			for it := src.MapRange(); it.Next(); {
				k.SetIterKey(it)
				v.SetIterValue(it)
				if elem != nil {
					elem.fn(cv, v)
					n.SetMapIndex(k, cv)
				} else {
					n.SetMapIndex(k, v)
				}
			}
			dst.Set(n)
		}
	case reflect.Slice:
		switch t {
		case typeStrings:
			c.fn = func(dst, src reflect.Value) {
				dst.Set(reflect.ValueOf(slices.Clone(src.Interface().([]string))))
			}
			return true
		case typeJSONSlice:
			c.fn = func(dst, src reflect.Value) {
				dst.Set(reflect.ValueOf(copyJSONSlice(src.Interface().([]any))))
			}
			return true
		}
		elem := buildCopier(t.Elem(), built)
		c.fn = func(dst, src reflect.Value) {
			if src.IsNil() {
				dst.SetZero()
				return
			}
			l := src.Len()
			n := reflect.MakeSlice(t, l, l)
			if elem == nil {
				reflect.Copy(n, src)
			} else {
				for i := 0; i < l; i++ {
					elem.fn(n.Index(i), src.Index(i))
				}
			}
			dst.Set(n)
		}
	case reflect.Interface:
		c.fn = func(dst, src reflect.Value) {
			if src.IsNil() {
				dst.SetZero()
				return
			}
			e := src.Elem()
			switch e.Type() {
			case typeJSONMap:
				dst.Set(reflect.ValueOf(copyJSONMap(e.Interface().(map[string]any))))
				return
			case typeJSONSlice:
				dst.Set(reflect.ValueOf(copyJSONSlice(e.Interface().([]any))))
				return
			}
			ec := copierFor(e.Type())
			if ec == nil {
				dst.Set(e)
				return
			}
			n := reflect.New(e.Type()).Elem()
			ec.fn(n, e)
			dst.Set(n)
		}
	case reflect.Array:
		elem := buildCopier(t.Elem(), built)
		if elem == nil {
			return false
		}
		c.fn = func(dst, src reflect.Value) {
			dst.Set(src)
			for i := 0; i < src.Len(); i++ {
				elem.fn(dst.Index(i), src.Index(i))
			}
		}
	case reflect.Struct:
		type field struct {
			index int
			c     *copier
		}
		var fields []field
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			if fc := buildCopier(f.Type, built); fc != nil {
				fields = append(fields, field{i, fc})
			}
		}
		if len(fields) == 0 {
			return false
		}
		c.fn = func(dst, src reflect.Value) {
			dst.Set(src) // unexported fields by assignment
			for _, f := range fields {
				f.c.fn(dst.Field(f.index), src.Field(f.index))
			}
		}
	default:
		return false
	}
	return true
}

// copyJSONMap deep-copies decoded JSON (and anything else, reflectively).
func copyJSONMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = copyJSONValue(v)
	}
	return out
}

func copyJSONSlice(s []any) []any {
	if s == nil {
		return nil
	}
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = copyJSONValue(v)
	}
	return out
}

func copyJSONValue(v any) any {
	switch x := v.(type) {
	case nil, string, bool, float64, int, int64, int32, float32, uint64:
		return v
	case map[string]any:
		return copyJSONMap(x)
	case []any:
		return copyJSONSlice(x)
	case map[string]string:
		return maps.Clone(x)
	}
	rv := reflect.ValueOf(v)
	c := copierFor(rv.Type())
	if c == nil {
		return v
	}
	n := reflect.New(rv.Type()).Elem()
	c.fn(n, rv)
	return n.Interface()
}
