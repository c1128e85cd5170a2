package meta

import (
	"reflect"
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
	rv := reflect.ValueOf(&v).Elem()
	if !needsCopy(rv.Type()) {
		return v
	}
	out := copyValue(rv)
	return out.Interface().(T)
}

var deepTypes sync.Map // reflect.Type → bool: whether values need more than assignment

// needsCopy reports whether a value of type t holds references that an
// assignment would share.
func needsCopy(t reflect.Type) bool {
	if v, ok := deepTypes.Load(t); ok {
		return v.(bool)
	}
	deepTypes.Store(t, true) // assume yes while recursing (cycles)
	var deep bool
	switch t.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface:
		deep = true
	case reflect.Array:
		deep = needsCopy(t.Elem())
	case reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.IsExported() && needsCopy(f.Type) {
				deep = true
				break
			}
		}
	}
	deepTypes.Store(t, deep)
	return deep
}

func copyValue(v reflect.Value) reflect.Value {
	t := v.Type()
	if !needsCopy(t) {
		return v
	}
	switch t.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return v
		}
		n := reflect.New(t.Elem())
		n.Elem().Set(copyValue(v.Elem()))
		return n
	case reflect.Map:
		if v.IsNil() {
			return v
		}
		n := reflect.MakeMapWithSize(t, v.Len())
		deepVal := needsCopy(t.Elem())
		it := v.MapRange()
		for it.Next() {
			val := it.Value()
			if deepVal {
				val = copyValue(val)
			}
			n.SetMapIndex(it.Key(), val)
		}
		return n
	case reflect.Slice:
		if v.IsNil() {
			return v
		}
		n := reflect.MakeSlice(t, v.Len(), v.Len())
		if !needsCopy(t.Elem()) {
			reflect.Copy(n, v)
			return n
		}
		for i := 0; i < v.Len(); i++ {
			n.Index(i).Set(copyValue(v.Index(i)))
		}
		return n
	case reflect.Interface:
		if v.IsNil() {
			return v
		}
		n := reflect.New(t).Elem()
		n.Set(copyValue(v.Elem()))
		return n
	case reflect.Array:
		n := reflect.New(t).Elem()
		for i := 0; i < v.Len(); i++ {
			n.Index(i).Set(copyValue(v.Index(i)))
		}
		return n
	case reflect.Struct:
		n := reflect.New(t).Elem()
		n.Set(v) // unexported fields by assignment
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.IsExported() && needsCopy(f.Type) {
				n.Field(i).Set(copyValue(v.Field(i)))
			}
		}
		return n
	}
	return v
}

// CopyInto deep-copies src into dst, which must be of the same type; it is
// how stores fill a caller's object without sharing memory with their own.
func CopyInto(dst, src Object) {
	if du, ok := dst.(*Unstructured); ok {
		*du = *src.(*Unstructured).DeepCopyObject().(*Unstructured)
		return
	}
	dv := reflect.ValueOf(dst).Elem()
	dv.Set(copyValue(reflect.ValueOf(src).Elem()))
}
