// Package controllerutil has the helpers reconcilers use on every object:
// finalizers, owner references, and CreateOrUpdate with compare-and-swap
// retries.
package controllerutil

import (
	"context"
	"math/rand/v2"
	"reflect"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// AddFinalizer adds f to obj's finalizers and reports whether it was
// missing.
func AddFinalizer(obj meta.Object, f string) bool {
	m := obj.GetObjectMeta()
	if m.HasFinalizer(f) {
		return false
	}
	m.Finalizers = append(m.Finalizers, f)
	return true
}

// RemoveFinalizer removes f from obj's finalizers and reports whether it
// was there.
func RemoveFinalizer(obj meta.Object, f string) bool {
	m := obj.GetObjectMeta()
	out := m.Finalizers[:0]
	found := false
	for _, x := range m.Finalizers {
		if x == f {
			found = true
			continue
		}
		out = append(out, x)
	}
	m.Finalizers = out
	return found
}

// SetControllerReference makes owner the controller of obj. The owner must
// be stored (have a uid), in obj's namespace or cluster-scoped; another
// controller already set is errs.AlreadyExists.
func SetControllerReference(owner, obj meta.Object, scheme *store.Scheme) error {
	return setOwner(owner, obj, scheme, true)
}

// SetOwnerReference adds (or refreshes) a non-controller owner reference to
// owner on obj.
func SetOwnerReference(owner, obj meta.Object, scheme *store.Scheme) error {
	return setOwner(owner, obj, scheme, false)
}

func setOwner(owner, obj meta.Object, scheme *store.Scheme, controller bool) error {
	k, err := scheme.KindOf(owner)
	if err != nil {
		return err
	}
	om, m := owner.GetObjectMeta(), obj.GetObjectMeta()
	if om.UID == "" {
		return errs.Invalid("owner.metadata.uid", "owner %s %s has no uid: create it first", k.Name, om.Key())
	}
	if k.Namespaced && om.Namespace != m.Namespace {
		return errs.Invalid("metadata.ownerReferences", "owner %s %s is in another namespace than %s", k.Name, om.Key(), m.Key())
	}
	ref := meta.OwnerReference{Kind: k.Name, Name: om.Name, UID: om.UID, Controller: controller, BlockOwnerDeletion: controller}
	if controller {
		if c := m.ControllerRef(); c != nil && (c.Kind != ref.Kind || c.Name != ref.Name || c.UID != ref.UID) {
			return errs.New(errs.AlreadyExists, "%s is already controlled by %s %s", m.Key(), c.Kind, c.Name)
		}
	}
	for i, r := range m.OwnerReferences {
		if r.Kind == ref.Kind && r.Name == ref.Name {
			m.OwnerReferences[i] = ref
			return nil
		}
	}
	m.OwnerReferences = append(m.OwnerReferences, ref)
	return nil
}

// OperationResult says what CreateOrUpdate did.
type OperationResult string

// CreateOrUpdate results.
const (
	OperationResultNone    OperationResult = "unchanged"
	OperationResultCreated OperationResult = "created"
	OperationResultUpdated OperationResult = "updated"
)

// ReadWriter reads and writes objects (a store.Store).
type ReadWriter interface {
	store.Reader
	store.Writer
}

// CreateOrUpdate reads obj (by its key) from rw, applies mutate, and creates
// or updates it; an Update that lost a compare-and-swap is retried from a
// fresh read (mutate runs again). mutate must not change the key. Nothing
// is written when mutate changed nothing.
func CreateOrUpdate(ctx context.Context, rw ReadWriter, obj meta.Object, mutate func() error) (OperationResult, error) {
	key := meta.KeyOf(obj)
	result := OperationResultNone
	err := retryOnConflict(ctx, func() error {
		if err := rw.Get(ctx, key, obj); err != nil {
			if !errs.IsNotFound(err) {
				return err
			}
			if err := mutateKeep(mutate, key, obj); err != nil {
				return err
			}
			if err := rw.Create(ctx, obj); err != nil {
				if errs.IsAlreadyExists(err) {
					return errs.Wrap(errs.Conflict, err, "created concurrently")
				}
				return err
			}
			result = OperationResultCreated
			return nil
		}
		before := meta.DeepCopy(obj)
		if err := mutateKeep(mutate, key, obj); err != nil {
			return err
		}
		if reflect.DeepEqual(before, obj) {
			result = OperationResultNone
			return nil
		}
		if err := rw.Update(ctx, obj); err != nil {
			return err
		}
		result = OperationResultUpdated
		return nil
	})
	return result, err
}

func mutateKeep(mutate func() error, key meta.Key, obj meta.Object) error {
	if err := mutate(); err != nil {
		return err
	}
	if meta.KeyOf(obj) != key {
		return errs.Invalid("metadata.name", "mutate changed the object's key from %s to %s", key, meta.KeyOf(obj))
	}
	return nil
}

// retryOnConflict runs fn until it returns anything but a Conflict, at most
// conflictRetries times, with a short growing pause between tries. The
// pause is jittered: writers that lost to each other with the same pause
// would meet again at the next try, and the same ones keep losing.
func retryOnConflict(ctx context.Context, fn func() error) error {
	delay := 5 * time.Millisecond
	for i := 0; ; i++ {
		err := fn()
		if !errs.IsConflict(err) || i == conflictRetries-1 {
			return err
		}
		t := time.NewTimer(delay/2 + rand.N(delay))
		select {
		case <-ctx.Done():
			t.Stop()
			return errs.Wrap(errs.CodeOf(ctx.Err()), err, "gave up retrying")
		case <-t.C:
		}
		delay = min(delay*2, 200*time.Millisecond)
	}
}

// conflictRetries bounds CreateOrUpdate's attempts.
const conflictRetries = 10
