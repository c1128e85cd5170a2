// Package builder wires controllers into a manager with controller-runtime's
// fluent API:
//
//	err := builder.ControllerManagedBy(mgr).
//		For(&Widget{}).
//		Owns(&Gadget{}).
//		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
//		Complete(reconciler)
//
// For watches the reconciled kind itself, Owns enqueues the controlling
// owner of objects of another kind, and Watches takes any kind with any
// handler. Event filters apply to every watch; per-watch predicates to one.
package builder

import (
	"strings"

	"github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/controller/handler"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
)

// Option configures one watch (For, Owns, Watches).
type Option func(*watch)

// WithPredicates filters the events of one watch.
func WithPredicates(preds ...source.Predicate) Option {
	return func(w *watch) { w.preds = append(w.preds, preds...) }
}

type watch struct {
	obj     meta.Object
	handler source.EventHandler
	preds   []source.Predicate
}

// Builder builds a controller; see the package documentation.
type Builder struct {
	mgr     *manager.Manager
	forW    *watch
	owns    []*watch
	watches []*watch
	raw     []source.Source
	filters []source.Predicate
	opts    controller.Options
	name    string
	err     error
}

// ControllerManagedBy starts building a controller that mgr will run.
func ControllerManagedBy(mgr *manager.Manager) *Builder { return &Builder{mgr: mgr} }

// For sets the kind the controller reconciles: its events enqueue the
// object's own key.
func (b *Builder) For(obj meta.Object, opts ...Option) *Builder {
	if b.forW != nil {
		b.err = errs.New(errs.InvalidArgument, "For may be called only once")
	}
	b.forW = newWatch(obj, handler.EnqueueRequestForObject{}, opts)
	return b
}

// Owns watches objects of obj's kind and enqueues their controlling owner
// of the For kind.
func (b *Builder) Owns(obj meta.Object, opts ...Option) *Builder {
	b.owns = append(b.owns, newWatch(obj, nil, opts))
	return b
}

// Watches watches objects of obj's kind with handler h.
func (b *Builder) Watches(obj meta.Object, h source.EventHandler, opts ...Option) *Builder {
	b.watches = append(b.watches, newWatch(obj, h, opts))
	return b
}

// WatchesRawSource adds a source as it is (Channel, Periodic, custom).
func (b *Builder) WatchesRawSource(src source.Source) *Builder {
	b.raw = append(b.raw, src)
	return b
}

// WithEventFilter adds predicates applied to every watch.
func (b *Builder) WithEventFilter(p source.Predicate) *Builder {
	b.filters = append(b.filters, p)
	return b
}

// WithOptions sets the controller's options. Logger and Registry default
// to the manager's.
func (b *Builder) WithOptions(o controller.Options) *Builder {
	b.opts = o
	return b
}

// Named sets the controller's name (default: the For kind in lower case).
func (b *Builder) Named(name string) *Builder {
	b.name = name
	return b
}

// Complete builds the controller and adds it to the manager.
func (b *Builder) Complete(r controller.Reconciler) error {
	_, err := b.Build(r)
	return err
}

// Build builds the controller, adds it to the manager and returns it.
func (b *Builder) Build(r controller.Reconciler) (*controller.Controller, error) {
	if b.err != nil {
		return nil, b.err
	}
	if b.forW == nil {
		return nil, errs.Invalid("for", "For must be called to name the reconciled kind")
	}
	scheme := b.mgr.Store().Scheme()
	forKind, err := scheme.KindOf(b.forW.obj)
	if err != nil {
		return nil, errs.WithField(err, "for")
	}
	name := b.name
	if name == "" {
		name = strings.ToLower(forKind.Name)
	}
	opts := b.opts
	if opts.Logger.GetSink() == nil {
		opts.Logger = b.mgr.Logger().WithName(name)
	}
	if opts.Registry == nil {
		opts.Registry = b.mgr.Registry()
	}
	c, err := controller.New(name, r, opts)
	if err != nil {
		return nil, err
	}
	ownerOpts := []handler.OwnerOption{handler.OnlyControllerOwner()}
	if !forKind.Namespaced {
		ownerOpts = append(ownerOpts, handler.OwnerIsClusterScoped())
	}
	for _, o := range b.owns {
		o.handler = handler.EnqueueRequestForOwner(forKind.Name, ownerOpts...)
	}
	all := append(append([]*watch{b.forW}, b.owns...), b.watches...)
	for _, w := range all {
		k, err := scheme.KindOf(w.obj)
		if err != nil {
			return nil, err
		}
		src, err := source.Kind(b.mgr.Cache(), k.Name, w.handler, append(append([]source.Predicate{}, b.filters...), w.preds...)...)
		if err != nil {
			return nil, err
		}
		if err := c.Watch(src); err != nil {
			return nil, err
		}
	}
	for _, src := range b.raw {
		if err := c.Watch(src); err != nil {
			return nil, err
		}
	}
	if err := b.mgr.Add(c); err != nil {
		return nil, err
	}
	return c, nil
}

func newWatch(obj meta.Object, h source.EventHandler, opts []Option) *watch {
	w := &watch{obj: obj, handler: h}
	for _, o := range opts {
		o(w)
	}
	return w
}
