// Package predicate filters events before a controller's handler sees
// them: GenerationChanged, ResourceVersionChanged, LabelChanged,
// AnnotationChanged, a label selector, Funcs, and And/Or/Not to combine
// them. Predicates implement source.Predicate.
package predicate

import (
	"maps"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
)

// Predicate is source.Predicate.
type Predicate = source.Predicate

// Funcs is a predicate built from optional functions; a nil function lets
// its events through.
type Funcs struct {
	CreateFunc  func(source.CreateEvent) bool
	UpdateFunc  func(source.UpdateEvent) bool
	DeleteFunc  func(source.DeleteEvent) bool
	GenericFunc func(source.GenericEvent) bool
}

// Create implements Predicate.
func (f Funcs) Create(e source.CreateEvent) bool { return f.CreateFunc == nil || f.CreateFunc(e) }

// Update implements Predicate.
func (f Funcs) Update(e source.UpdateEvent) bool { return f.UpdateFunc == nil || f.UpdateFunc(e) }

// Delete implements Predicate.
func (f Funcs) Delete(e source.DeleteEvent) bool { return f.DeleteFunc == nil || f.DeleteFunc(e) }

// Generic implements Predicate.
func (f Funcs) Generic(e source.GenericEvent) bool {
	return f.GenericFunc == nil || f.GenericFunc(e)
}

// NewPredicateFuncs applies filter to the object of every event (the new
// object of updates).
func NewPredicateFuncs(filter func(obj meta.Object) bool) Funcs {
	return Funcs{
		CreateFunc:  func(e source.CreateEvent) bool { return filter(e.Object) },
		UpdateFunc:  func(e source.UpdateEvent) bool { return filter(e.ObjectNew) },
		DeleteFunc:  func(e source.DeleteEvent) bool { return filter(e.Object) },
		GenericFunc: func(e source.GenericEvent) bool { return filter(e.Object) },
	}
}

func updateOnly(f func(o, n *meta.ObjectMeta) bool) Funcs {
	return Funcs{UpdateFunc: func(e source.UpdateEvent) bool {
		if e.ObjectOld == nil || e.ObjectNew == nil {
			return false
		}
		return f(e.ObjectOld.GetObjectMeta(), e.ObjectNew.GetObjectMeta())
	}}
}

// GenerationChanged passes updates that changed the spec (generation),
// and every create, delete and generic event.
func GenerationChanged() Funcs {
	return updateOnly(func(o, n *meta.ObjectMeta) bool { return o.Generation != n.Generation })
}

// ResourceVersionChanged passes updates that changed anything (it drops
// resyncs).
func ResourceVersionChanged() Funcs {
	return updateOnly(func(o, n *meta.ObjectMeta) bool { return o.ResourceVersion != n.ResourceVersion })
}

// LabelChanged passes updates that changed the labels.
func LabelChanged() Funcs {
	return updateOnly(func(o, n *meta.ObjectMeta) bool { return !maps.Equal(o.Labels, n.Labels) })
}

// AnnotationChanged passes updates that changed the annotations.
func AnnotationChanged() Funcs {
	return updateOnly(func(o, n *meta.ObjectMeta) bool { return !maps.Equal(o.Annotations, n.Annotations) })
}

// LabelSelector passes events whose object's labels match sel.
func LabelSelector(sel labels.Selector) Funcs {
	return NewPredicateFuncs(func(obj meta.Object) bool {
		return obj != nil && sel.Matches(labels.Set(obj.GetObjectMeta().Labels))
	})
}

// ParseLabelSelector is LabelSelector for a selector string such as
// "app=web,tier!=db"; a malformed one is InvalidArgument.
func ParseLabelSelector(s string) (Funcs, error) {
	sel, err := labels.Parse(s)
	if err != nil {
		return Funcs{}, errs.Invalid("selector", "%v", err)
	}
	return LabelSelector(sel), nil
}

// And passes events that every predicate passes.
func And(preds ...Predicate) Funcs {
	return Funcs{
		CreateFunc: func(e source.CreateEvent) bool {
			for _, p := range preds {
				if !p.Create(e) {
					return false
				}
			}
			return true
		},
		UpdateFunc: func(e source.UpdateEvent) bool {
			for _, p := range preds {
				if !p.Update(e) {
					return false
				}
			}
			return true
		},
		DeleteFunc: func(e source.DeleteEvent) bool {
			for _, p := range preds {
				if !p.Delete(e) {
					return false
				}
			}
			return true
		},
		GenericFunc: func(e source.GenericEvent) bool {
			for _, p := range preds {
				if !p.Generic(e) {
					return false
				}
			}
			return true
		},
	}
}

// Or passes events that at least one predicate passes.
func Or(preds ...Predicate) Funcs {
	return Funcs{
		CreateFunc: func(e source.CreateEvent) bool {
			for _, p := range preds {
				if p.Create(e) {
					return true
				}
			}
			return false
		},
		UpdateFunc: func(e source.UpdateEvent) bool {
			for _, p := range preds {
				if p.Update(e) {
					return true
				}
			}
			return false
		},
		DeleteFunc: func(e source.DeleteEvent) bool {
			for _, p := range preds {
				if p.Delete(e) {
					return true
				}
			}
			return false
		},
		GenericFunc: func(e source.GenericEvent) bool {
			for _, p := range preds {
				if p.Generic(e) {
					return true
				}
			}
			return false
		},
	}
}

// Not inverts p.
func Not(p Predicate) Funcs {
	return Funcs{
		CreateFunc:  func(e source.CreateEvent) bool { return !p.Create(e) },
		UpdateFunc:  func(e source.UpdateEvent) bool { return !p.Update(e) },
		DeleteFunc:  func(e source.DeleteEvent) bool { return !p.Delete(e) },
		GenericFunc: func(e source.GenericEvent) bool { return !p.Generic(e) },
	}
}
