package manager

import (
	"context"

	"github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/controller/handler"
	"github.com/capstanhq/capstan/pkg/controller/predicate"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
	"github.com/capstanhq/capstan/pkg/store"
)

// ownerUIDIndex indexes dependents by the uids of their owners.
const ownerUIDIndex = "capstan.ownerUID"

// AddGarbageCollector adds the owner-reference garbage collector to m: for
// every kind in the store's scheme, a controller named "gc-<kind>" deletes
// objects all of whose owners are gone (background cascade: a deleted
// owner's dependents are deleted after it, their own dependents after
// them). An owner counts as gone when the store itself (not only the
// cache) has no object of that kind and name with the referenced uid.
// Owners of kinds this process does not know are assumed present, and so
// are namespaced owners of cluster-scoped objects (such references cannot
// be resolved).
func AddGarbageCollector(m *Manager, opts controller.Options) error {
	scheme := m.Store().Scheme()
	kinds := scheme.Kinds()
	for _, dep := range kinds {
		inf, err := m.Cache().Informer(dep.Name)
		if err != nil {
			return err
		}
		if err := inf.AddIndex(ownerUIDIndex, func(obj meta.Object) []string {
			refs := obj.GetObjectMeta().OwnerReferences
			out := make([]string, len(refs))
			for i, r := range refs {
				out[i] = r.UID
			}
			return out
		}); err != nil {
			return err
		}
		o := opts
		if o.Logger.GetSink() == nil {
			o.Logger = m.Logger().WithName("gc").WithValues("kind", dep.Name)
		}
		if o.Registry == nil {
			o.Registry = m.Registry()
		}
		gc := &collector{m: m, kind: dep, informer: inf}
		c, err := controller.New("gc-"+dep.Name, gc, o)
		if err != nil {
			return err
		}
		hasOwners := predicate.NewPredicateFuncs(func(obj meta.Object) bool {
			return len(obj.GetObjectMeta().OwnerReferences) > 0
		})
		self, err := source.Kind(m.Cache(), dep.Name, handler.EnqueueRequestForObject{}, hasOwners)
		if err != nil {
			return err
		}
		if err := c.Watch(self); err != nil {
			return err
		}
		for _, owner := range kinds {
			onDelete := handler.Funcs{DeleteFunc: func(_ context.Context, e source.DeleteEvent, q source.Queue) {
				uid := e.Object.GetObjectMeta().UID
				if uid == "" {
					return
				}
				deps, _ := inf.ByIndex(ownerUIDIndex, uid)
				for _, d := range deps {
					q.Add(meta.KeyOf(d))
				}
			}}
			src, err := source.Kind(m.Cache(), owner.Name, onDelete)
			if err != nil {
				return err
			}
			if err := c.Watch(src); err != nil {
				return err
			}
		}
		if err := m.Add(c); err != nil {
			return err
		}
	}
	return nil
}

type collector struct {
	m        *Manager
	kind     *store.Kind
	informer *source.Informer
}

// Reconcile deletes the dependent if every owner is gone.
func (g *collector) Reconcile(ctx context.Context, req controller.Request) (controller.Result, error) {
	cached, ok := g.informer.Get(req)
	if !ok {
		return controller.Result{}, nil
	}
	dm := cached.GetObjectMeta()
	if len(dm.OwnerReferences) == 0 || dm.DeletionTimestamp != nil {
		return controller.Result{}, nil
	}
	for _, ref := range dm.OwnerReferences {
		gone, err := g.ownerGone(ctx, dm, ref)
		if err != nil {
			return controller.Result{}, err
		}
		if !gone {
			return controller.Result{}, nil
		}
	}
	victim := g.kind.New()
	victim.GetObjectMeta().Namespace, victim.GetObjectMeta().Name = dm.Namespace, dm.Name
	err := g.m.Store().Delete(ctx, victim, store.WithPreconditions(store.Preconditions{UID: dm.UID}))
	switch {
	case err == nil:
		controller.LoggerFrom(ctx).Info("deleted object whose owners are gone", "kind", g.kind.Name, "uid", dm.UID)
		return controller.Result{}, nil
	case errs.IsNotFound(err), errs.IsConflict(err):
		return controller.Result{}, nil // already gone, or another incarnation
	}
	return controller.Result{}, err
}

func (g *collector) ownerGone(ctx context.Context, dm *meta.ObjectMeta, ref meta.OwnerReference) (bool, error) {
	ok, err := g.m.Store().Scheme().Kind(ref.Kind)
	if err != nil {
		return false, nil // unknown kind: cannot tell, keep the dependent
	}
	key := meta.Key{Name: ref.Name}
	if ok.Namespaced {
		if dm.Namespace == "" {
			// A cluster-scoped object cannot have a namespaced owner:
			// the reference cannot be resolved, so keep the object (as
			// Kubernetes does) rather than fail on every retry.
			return false, nil
		}
		key.Namespace = dm.Namespace
	}
	if inf, err := g.m.Cache().Informer(ok.Name); err == nil {
		if o, found := inf.Get(key); found && o.GetObjectMeta().UID == ref.UID {
			return false, nil
		}
	}
	// The cache may lag behind a just-created owner: ask the store.
	owner := ok.New()
	if err := g.m.Store().Get(ctx, key, owner); err != nil {
		if errs.IsNotFound(err) {
			return true, nil
		}
		return false, err
	}
	return owner.GetObjectMeta().UID != ref.UID, nil
}
