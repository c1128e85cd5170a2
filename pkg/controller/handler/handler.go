// Package handler maps events to the keys a controller reconciles:
// EnqueueRequestForObject (the object itself), EnqueueRequestForOwner (its
// owner of a kind, optionally only the controlling owner) and
// EnqueueRequestsFromMapFunc (any keys computed from the object, for old
// and new state on updates). Handlers implement source.EventHandler.
package handler

import (
	"context"

	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
)

// Request is a key to reconcile.
type Request = meta.Key

// EnqueueRequestForObject enqueues the key of the object in each event.
type EnqueueRequestForObject struct{}

var _ source.EventHandler = EnqueueRequestForObject{}

// Create implements source.EventHandler.
func (EnqueueRequestForObject) Create(_ context.Context, e source.CreateEvent, q source.Queue) {
	add(q, e.Object)
}

// Update implements source.EventHandler: the new object's key (and the
// old one's, should it differ).
func (EnqueueRequestForObject) Update(_ context.Context, e source.UpdateEvent, q source.Queue) {
	add(q, e.ObjectNew)
	if e.ObjectOld != nil && e.ObjectNew != nil && meta.KeyOf(e.ObjectOld) != meta.KeyOf(e.ObjectNew) {
		add(q, e.ObjectOld)
	}
}

// Delete implements source.EventHandler.
func (EnqueueRequestForObject) Delete(_ context.Context, e source.DeleteEvent, q source.Queue) {
	add(q, e.Object)
}

// Generic implements source.EventHandler.
func (EnqueueRequestForObject) Generic(_ context.Context, e source.GenericEvent, q source.Queue) {
	add(q, e.Object)
}

func add(q source.Queue, obj meta.Object) {
	if obj != nil {
		q.Add(meta.KeyOf(obj))
	}
}

// OwnerOption configures EnqueueRequestForOwner.
type OwnerOption func(*ownerHandler)

// OnlyControllerOwner enqueues only the owner reference marked as the
// controller.
func OnlyControllerOwner() OwnerOption { return func(h *ownerHandler) { h.onlyController = true } }

// OwnerIsClusterScoped says that the owner kind is cluster-scoped, so its
// keys have no namespace (by default owners are in the object's
// namespace).
func OwnerIsClusterScoped() OwnerOption { return func(h *ownerHandler) { h.clusterScoped = true } }

// EnqueueRequestForOwner enqueues the owners of kind ownerKind named in the
// object's owner references (in the object's namespace, unless
// OwnerIsClusterScoped), for the old and the new object on updates.
func EnqueueRequestForOwner(ownerKind string, opts ...OwnerOption) source.EventHandler {
	h := &ownerHandler{kind: ownerKind}
	for _, o := range opts {
		o(h)
	}
	return h
}

type ownerHandler struct {
	kind           string
	onlyController bool
	clusterScoped  bool
}

func (h *ownerHandler) owners(obj meta.Object, out map[Request]struct{}) {
	if obj == nil {
		return
	}
	m := obj.GetObjectMeta()
	for _, r := range m.OwnerReferences {
		if r.Kind != h.kind || (h.onlyController && !r.Controller) {
			continue
		}
		req := Request{Namespace: m.Namespace, Name: r.Name}
		if h.clusterScoped {
			req.Namespace = ""
		}
		out[req] = struct{}{}
	}
}

func (h *ownerHandler) enqueue(q source.Queue, objs ...meta.Object) {
	reqs := map[Request]struct{}{}
	for _, o := range objs {
		h.owners(o, reqs)
	}
	for r := range reqs {
		q.Add(r)
	}
}

func (h *ownerHandler) Create(_ context.Context, e source.CreateEvent, q source.Queue) {
	h.enqueue(q, e.Object)
}
func (h *ownerHandler) Update(_ context.Context, e source.UpdateEvent, q source.Queue) {
	h.enqueue(q, e.ObjectOld, e.ObjectNew)
}
func (h *ownerHandler) Delete(_ context.Context, e source.DeleteEvent, q source.Queue) {
	h.enqueue(q, e.Object)
}
func (h *ownerHandler) Generic(_ context.Context, e source.GenericEvent, q source.Queue) {
	h.enqueue(q, e.Object)
}

// MapFunc returns the keys to reconcile for an object.
type MapFunc func(ctx context.Context, obj meta.Object) []Request

// TypedMapFunc is MapFunc for a known Go type.
type TypedMapFunc[T meta.Object] func(ctx context.Context, obj T) []Request

// EnqueueRequestsFromMapFunc enqueues what fn returns for the object (for
// both old and new objects on updates, de-duplicated).
func EnqueueRequestsFromMapFunc(fn MapFunc) source.EventHandler { return mapHandler{fn: fn} }

// EnqueueRequestsFromTypedMapFunc is EnqueueRequestsFromMapFunc without the
// cast: objects of other types are ignored.
func EnqueueRequestsFromTypedMapFunc[T meta.Object](fn TypedMapFunc[T]) source.EventHandler {
	return mapHandler{fn: func(ctx context.Context, obj meta.Object) []Request {
		t, ok := obj.(T)
		if !ok {
			return nil
		}
		return fn(ctx, t)
	}}
}

type mapHandler struct{ fn MapFunc }

func (h mapHandler) enqueue(ctx context.Context, q source.Queue, objs ...meta.Object) {
	seen := map[Request]struct{}{}
	for _, o := range objs {
		if o == nil {
			continue
		}
		for _, r := range h.fn(ctx, o) {
			if _, dup := seen[r]; !dup {
				seen[r] = struct{}{}
				q.Add(r)
			}
		}
	}
}

func (h mapHandler) Create(ctx context.Context, e source.CreateEvent, q source.Queue) {
	h.enqueue(ctx, q, e.Object)
}
func (h mapHandler) Update(ctx context.Context, e source.UpdateEvent, q source.Queue) {
	h.enqueue(ctx, q, e.ObjectOld, e.ObjectNew)
}
func (h mapHandler) Delete(ctx context.Context, e source.DeleteEvent, q source.Queue) {
	h.enqueue(ctx, q, e.Object)
}
func (h mapHandler) Generic(ctx context.Context, e source.GenericEvent, q source.Queue) {
	h.enqueue(ctx, q, e.Object)
}

// Funcs implements source.EventHandler with optional functions.
type Funcs struct {
	CreateFunc  func(context.Context, source.CreateEvent, source.Queue)
	UpdateFunc  func(context.Context, source.UpdateEvent, source.Queue)
	DeleteFunc  func(context.Context, source.DeleteEvent, source.Queue)
	GenericFunc func(context.Context, source.GenericEvent, source.Queue)
}

// Create implements source.EventHandler.
func (f Funcs) Create(ctx context.Context, e source.CreateEvent, q source.Queue) {
	if f.CreateFunc != nil {
		f.CreateFunc(ctx, e, q)
	}
}

// Update implements source.EventHandler.
func (f Funcs) Update(ctx context.Context, e source.UpdateEvent, q source.Queue) {
	if f.UpdateFunc != nil {
		f.UpdateFunc(ctx, e, q)
	}
}

// Delete implements source.EventHandler.
func (f Funcs) Delete(ctx context.Context, e source.DeleteEvent, q source.Queue) {
	if f.DeleteFunc != nil {
		f.DeleteFunc(ctx, e, q)
	}
}

// Generic implements source.EventHandler.
func (f Funcs) Generic(ctx context.Context, e source.GenericEvent, q source.Queue) {
	if f.GenericFunc != nil {
		f.GenericFunc(ctx, e, q)
	}
}
