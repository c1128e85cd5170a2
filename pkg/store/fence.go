package store

import (
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
)

// WriteOptions modify a Create, Update or UpdateStatus.
type WriteOptions struct {
	// Fence, if set, guards the write with a fencing token.
	Fence *Fence
}

// Fence is a fencing token of a named lock or lease. A write guarded by it
// fails with errs.Conflict when the object records a higher token under
// the same name; otherwise the object records this token. So once a newer
// holder has written an object, a stale holder's writes to it are refused.
type Fence struct {
	// Name identifies the lock or lease, for example "Lock/ns/name".
	Name string
	// Token is the holder's token.
	Token int64
}

// WriteOption sets a WriteOptions field.
type WriteOption func(*WriteOptions)

// WithFence guards a write with the fencing token of the lock or lease
// name.
func WithFence(name string, token int64) WriteOption {
	return func(o *WriteOptions) { o.Fence = &Fence{Name: name, Token: token} }
}

// ApplyWriteOptions folds opts into a WriteOptions and validates them.
func ApplyWriteOptions(opts []WriteOption) (WriteOptions, error) {
	var o WriteOptions
	for _, f := range opts {
		f(&o)
	}
	if o.Fence != nil {
		if o.Fence.Name == "" || len(o.Fence.Name) > 512 {
			return o, errs.Invalid("fence.name", "fence name must have 1 to 512 characters")
		}
		if o.Fence.Token <= 0 {
			return o, errs.Invalid("fence.token", "fencing token must be positive, got %d", o.Fence.Token)
		}
	}
	return o, nil
}

// CheckFence returns errs.Conflict when stored records a higher token for
// f's name than f's; a nil f always passes.
func CheckFence(stored meta.Object, f *Fence) error {
	if f == nil || stored == nil {
		return nil
	}
	if have := stored.GetObjectMeta().Fences[f.Name]; have > f.Token {
		return errs.Field(errs.Conflict, "metadata.fences", "fenced write refused: %s has token %d, this writer holds %d", f.Name, have, f.Token)
	}
	return nil
}

// ApplyFence records f's token in obj (which the caller is about to
// store).
func ApplyFence(obj meta.Object, f *Fence) {
	if f == nil {
		return
	}
	m := obj.GetObjectMeta()
	if m.Fences == nil {
		m.Fences = map[string]int64{}
	}
	m.Fences[f.Name] = f.Token
}
