package main

import (
	"context"
	"sync/atomic"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"

	"github.com/capstanhq/capstan/test/e2e/api"
)

// Fenced writes. Every write the operator makes under a lease, lock or
// shard passes the holder's token to the store (store.WithFence), which
// refuses it with errs.Conflict once the object records a higher token for
// the same name.
//
// A store that does not check fences yet answers errs.Unimplemented; the
// operator then checks them itself: the object records, per fence name,
// the highest token that wrote it, and every write is a compare-and-swap
// on the resourceVersion read, so the check and the write are one atomic
// step. Once a newer holder has written the object, a stale holder's write
// fails either on the token (it read the newer record) or on the version
// (it read an older one; it reads again and fails on the token). The
// operator records the object's own fence record in both cases, so the
// checks stay the same.

// storeFences is false once the store said it does not check fences.
var storeFences atomic.Bool

func init() { storeFences.Store(true) }

// fenceMode says who checks the fences: "store" or "operator".
func fenceMode() string {
	if storeFences.Load() {
		return "store"
	}
	return "operator"
}

// fenceRecord returns the fence record of obj.
func fenceRecord(obj meta.Object) *map[string]int64 {
	switch o := obj.(type) {
	case *api.Job:
		return &o.Status.Fences
	case *api.Item:
		return &o.Status.Fences
	case *api.Ledger:
		return &o.Spec.Fences
	}
	panic("no fence record in " + meta.KeyOf(obj).String()) // programmer error
}

// fencedWrite runs write (the store's Create, Update or UpdateStatus) on
// obj, which was read from the store or is new, guarded by f.
func fencedWrite(ctx context.Context, obj meta.Object, f store.Fence, write func(context.Context, meta.Object, ...store.WriteOption) error) error {
	if refused, have := refusedBy(obj, f); refused {
		return errs.Field(errs.Conflict, "fences", "fenced write refused: %s has token %d, this writer holds %d", f.Name, have, f.Token)
	}
	rec := fenceRecord(obj)
	if *rec == nil {
		*rec = map[string]int64{}
	}
	(*rec)[f.Name] = f.Token
	if storeFences.Load() {
		err := write(ctx, obj, store.WithFence(f.Name, f.Token))
		if !errs.IsUnimplemented(err) {
			return err
		}
		storeFences.Store(false)
	}
	return write(ctx, obj)
}

// refusedBy reports whether stored records a higher token for f's name
// than f's (in the store's record or the object's own), and that token.
func refusedBy(stored meta.Object, f store.Fence) (bool, int64) {
	have := max((*fenceRecord(stored))[f.Name], stored.GetObjectMeta().Fences[f.Name])
	return have > f.Token, have
}

// fenceOf unpacks a fence write option (nil: no fence).
func fenceOf(opt store.WriteOption) *store.Fence {
	if opt == nil {
		return nil
	}
	o, err := store.ApplyWriteOptions([]store.WriteOption{opt})
	if err != nil {
		return nil
	}
	return o.Fence
}
