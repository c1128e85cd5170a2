package controller

import (
	"context"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// ObjectFunc adapts a function of typed objects to a Reconciler: each
// request's object is read from r (usually the manager's cache) into a
// fresh *T and passed to fn, which may modify it freely. A request whose
// object no longer exists is done without calling fn (react to deletions
// with finalizers).
func ObjectFunc[T any, PT interface {
	*T
	meta.Object
}](r store.Reader, fn func(ctx context.Context, obj PT) (Result, error)) Reconciler {
	return Func(func(ctx context.Context, req Request) (Result, error) {
		obj := PT(new(T))
		if err := r.Get(ctx, req, obj); err != nil {
			if errs.IsNotFound(err) {
				return Result{}, nil
			}
			return Result{}, err
		}
		return fn(ctx, obj)
	})
}
