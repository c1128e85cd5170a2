package predicate_test

import (
	"testing"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/controller/predicate"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
)

func obj(gen int64, rv string, lbl, ann map[string]string) *runtimetest.Widget {
	w := runtimetest.NewWidget("ns", "a", 0)
	w.Generation, w.ResourceVersion, w.Labels, w.Annotations = gen, rv, lbl, ann
	return w
}

// verdicts runs p on a create, update, delete and generic event.
type verdicts struct{ create, update, delete, generic bool }

func run(p source.Predicate, o, n meta.Object) verdicts {
	return verdicts{
		create:  p.Create(source.CreateEvent{Object: n}),
		update:  p.Update(source.UpdateEvent{ObjectOld: o, ObjectNew: n}),
		delete:  p.Delete(source.DeleteEvent{Object: n}),
		generic: p.Generic(source.GenericEvent{Object: n}),
	}
}

func TestPredicates(t *testing.T) {
	base := obj(1, "10", map[string]string{"app": "web"}, map[string]string{"note": "x"})
	specChanged := obj(2, "11", map[string]string{"app": "web"}, map[string]string{"note": "x"})
	statusChanged := obj(1, "12", map[string]string{"app": "web"}, map[string]string{"note": "x"})
	relabelled := obj(1, "13", map[string]string{"app": "db"}, map[string]string{"note": "x"})
	unlabelled := obj(1, "13", nil, map[string]string{"note": "x"})
	annotated := obj(1, "14", map[string]string{"app": "web"}, map[string]string{"note": "y"})
	web := labels.SelectorFromSet(labels.Set{"app": "web"})
	all := verdicts{true, true, true, true}
	onlyUpdateBlocked := verdicts{true, false, true, true}

	for _, c := range []struct {
		name string
		p    source.Predicate
		o, n meta.Object
		want verdicts
	}{
		{"generation changed", predicate.GenerationChanged(), base, specChanged, all},
		{"generation same", predicate.GenerationChanged(), base, statusChanged, onlyUpdateBlocked},
		{"generation nil old", predicate.GenerationChanged(), nil, specChanged, onlyUpdateBlocked},
		{"resourceVersion changed", predicate.ResourceVersionChanged(), base, statusChanged, all},
		{"resourceVersion same (resync)", predicate.ResourceVersionChanged(), base, base, onlyUpdateBlocked},
		{"labels changed", predicate.LabelChanged(), base, relabelled, all},
		{"labels removed", predicate.LabelChanged(), base, unlabelled, all},
		{"labels same", predicate.LabelChanged(), base, specChanged, onlyUpdateBlocked},
		{"labels nil and empty are equal", predicate.LabelChanged(), obj(1, "1", nil, nil), obj(1, "2", map[string]string{}, nil), onlyUpdateBlocked},
		{"annotations changed", predicate.AnnotationChanged(), base, annotated, all},
		{"annotations same", predicate.AnnotationChanged(), base, relabelled, onlyUpdateBlocked},
		{"selector matches new", predicate.LabelSelector(web), relabelled, base, all},
		{"selector misses new", predicate.LabelSelector(web), base, relabelled, verdicts{}},
		{"selector with nil object", predicate.LabelSelector(web), nil, nil, verdicts{}},
		{"funcs nil lets through", predicate.Funcs{}, base, base, all},
		{"funcs", predicate.Funcs{
			CreateFunc:  func(source.CreateEvent) bool { return false },
			GenericFunc: func(source.GenericEvent) bool { return false },
		}, base, base, verdicts{false, true, true, false}},
		{"new predicate funcs uses the new object", predicate.NewPredicateFuncs(func(o meta.Object) bool {
			return o.GetObjectMeta().ResourceVersion == "11"
		}), base, specChanged, all},
		{"and", predicate.And(predicate.GenerationChanged(), predicate.LabelSelector(web)), base, specChanged, all},
		{"and one fails", predicate.And(predicate.GenerationChanged(), predicate.LabelSelector(web)), base, statusChanged, onlyUpdateBlocked},
		{"and of nothing", predicate.And(), base, base, all},
		{"or", predicate.Or(predicate.GenerationChanged(), predicate.LabelChanged()), base, relabelled, all},
		{"or none passes", predicate.Or(predicate.GenerationChanged(), predicate.LabelChanged()), base, statusChanged, onlyUpdateBlocked},
		{"or of nothing", predicate.Or(), base, base, verdicts{}},
		{"not", predicate.Not(predicate.GenerationChanged()), base, statusChanged, verdicts{false, true, false, false}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := run(c.p, c.o, c.n); got != c.want {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestParseLabelSelector(t *testing.T) {
	p, err := predicate.ParseLabelSelector("app=web,tier!=db")
	if err != nil {
		t.Fatal(err)
	}
	match := obj(1, "1", map[string]string{"app": "web", "tier": "fe"}, nil)
	miss := obj(1, "1", map[string]string{"app": "web", "tier": "db"}, nil)
	if !p.Create(source.CreateEvent{Object: match}) || p.Create(source.CreateEvent{Object: miss}) {
		t.Fatal("parsed selector matches wrongly")
	}
	if _, err := predicate.ParseLabelSelector("app==="); !errs.IsInvalidArgument(err) || errs.FieldOf(err) != "selector" {
		t.Fatalf("malformed selector: %v (field %q), want InvalidArgument on selector", err, errs.FieldOf(err))
	}
}
