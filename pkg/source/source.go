package source

import (
	"context"
	"time"

	"k8s.io/client-go/util/workqueue"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
)

// Queue is a controller's work queue of object keys.
type Queue = workqueue.TypedRateLimitingInterface[meta.Key]

// CreateEvent reports a new object.
type CreateEvent struct {
	// Object is the new object (the cache's own: do not modify).
	Object meta.Object
	// IsInInitialList is true for objects of the informer's first list.
	IsInInitialList bool
}

// UpdateEvent reports a changed object (or a resync, with equal objects).
type UpdateEvent struct {
	// ObjectOld is the previous state.
	ObjectOld meta.Object
	// ObjectNew is the new state.
	ObjectNew meta.Object
}

// DeleteEvent reports a deleted object.
type DeleteEvent struct {
	// Object is the last known state.
	Object meta.Object
}

// GenericEvent reports something outside the store about an object (from
// a Channel or Periodic source).
type GenericEvent struct {
	// Object names the object concerned; often only its metadata is set.
	Object meta.Object
}

// EventHandler turns events into work queue items. Implementations are in
// pkg/controller/handler.
type EventHandler interface {
	// Create handles a CreateEvent.
	Create(ctx context.Context, e CreateEvent, q Queue)
	// Update handles an UpdateEvent.
	Update(ctx context.Context, e UpdateEvent, q Queue)
	// Delete handles a DeleteEvent.
	Delete(ctx context.Context, e DeleteEvent, q Queue)
	// Generic handles a GenericEvent.
	Generic(ctx context.Context, e GenericEvent, q Queue)
}

// Predicate filters events before the handler sees them. Implementations
// are in pkg/controller/predicate.
type Predicate interface {
	// Create reports whether a CreateEvent passes.
	Create(CreateEvent) bool
	// Update reports whether an UpdateEvent passes.
	Update(UpdateEvent) bool
	// Delete reports whether a DeleteEvent passes.
	Delete(DeleteEvent) bool
	// Generic reports whether a GenericEvent passes.
	Generic(GenericEvent) bool
}

// Source delivers events to a controller's queue.
type Source interface {
	// Start begins delivering to q; it must not block past setup. Sources
	// stop when ctx ends.
	Start(ctx context.Context, q Queue) error
}

// SyncingSource is a Source whose events come from a cache that must sync
// before the controller starts its workers.
type SyncingSource interface {
	Source
	// WaitForSync blocks until the source's cache has synced or ctx ends;
	// it returns an error in the latter case.
	WaitForSync(ctx context.Context) error
}

// KindSource delivers an informer's events through predicates to a
// handler.
type KindSource struct {
	informer   *Informer
	handler    EventHandler
	predicates []Predicate
}

// Kind returns a source of kind's events from cache.
func Kind(cache *Cache, kind string, h EventHandler, preds ...Predicate) (*KindSource, error) {
	inf, err := cache.Informer(kind)
	if err != nil {
		return nil, err
	}
	return &KindSource{informer: inf, handler: h, predicates: preds}, nil
}

// Start implements Source.
func (s *KindSource) Start(ctx context.Context, q Queue) error {
	s.informer.AddEventHandler(HandlerFuncs{
		AddFunc: func(obj meta.Object, initial bool) {
			e := CreateEvent{Object: obj, IsInInitialList: initial}
			for _, p := range s.predicates {
				if !p.Create(e) {
					return
				}
			}
			s.handler.Create(ctx, e, q)
		},
		UpdateFunc: func(o, n meta.Object) {
			e := UpdateEvent{ObjectOld: o, ObjectNew: n}
			for _, p := range s.predicates {
				if !p.Update(e) {
					return
				}
			}
			s.handler.Update(ctx, e, q)
		},
		DeleteFunc: func(obj meta.Object) {
			e := DeleteEvent{Object: obj}
			for _, p := range s.predicates {
				if !p.Delete(e) {
					return
				}
			}
			s.handler.Delete(ctx, e, q)
		},
	})
	return nil
}

// WaitForSync implements SyncingSource.
func (s *KindSource) WaitForSync(ctx context.Context) error {
	if !s.informer.WaitForSync(ctx) {
		return errs.Wrap(errs.DeadlineExceeded, ctx.Err(), "timed out waiting for the %s cache to sync", s.informer.Kind())
	}
	return nil
}

// ChannelSource delivers generic events read from a channel.
type ChannelSource struct {
	ch         <-chan GenericEvent
	handler    EventHandler
	predicates []Predicate
}

// Channel returns a source of the generic events sent on ch. The source
// stops when ch closes or the controller stops.
func Channel(ch <-chan GenericEvent, h EventHandler, preds ...Predicate) *ChannelSource {
	return &ChannelSource{ch: ch, handler: h, predicates: preds}
}

// Start implements Source.
func (s *ChannelSource) Start(ctx context.Context, q Queue) error {
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-s.ch:
				if !ok {
					return
				}
				if passGeneric(s.predicates, e) {
					s.handler.Generic(ctx, e, q)
				}
			}
		}
	}()
	return nil
}

// PeriodicSource emits generic events on a timer.
type PeriodicSource struct {
	interval time.Duration
	objects  func(ctx context.Context) []meta.Object
	handler  EventHandler
}

// Periodic returns a source that every interval calls objects and sends a
// generic event for each object it returns to h (for example every object
// of a kind from the cache, to re-check external state).
func Periodic(interval time.Duration, objects func(ctx context.Context) []meta.Object, h EventHandler) *PeriodicSource {
	return &PeriodicSource{interval: interval, objects: objects, handler: h}
}

// Start implements Source.
func (s *PeriodicSource) Start(ctx context.Context, q Queue) error {
	if s.interval <= 0 {
		return errs.Invalid("interval", "periodic source needs a positive interval, got %v", s.interval)
	}
	go func() {
		t := time.NewTicker(s.interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				for _, obj := range s.objects(ctx) {
					s.handler.Generic(ctx, GenericEvent{Object: obj}, q)
				}
			}
		}
	}()
	return nil
}

func passGeneric(preds []Predicate, e GenericEvent) bool {
	for _, p := range preds {
		if !p.Generic(e) {
			return false
		}
	}
	return true
}
