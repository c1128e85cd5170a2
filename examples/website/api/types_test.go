package api_test

import (
	"testing"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"

	"github.com/capstanhq/capstan/examples/website/api"
)

func TestAddToScheme(t *testing.T) {
	s := store.NewScheme()
	if err := api.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	for obj, want := range map[meta.Object]string{&api.Website{}: "websites", &api.WebServer{}: "webservers"} {
		k, err := s.KindOf(obj)
		if err != nil {
			t.Fatal(err)
		}
		if k.Collection != want || !k.Namespaced {
			t.Errorf("%s: collection %q namespaced %v, want %q namespaced", k.Name, k.Collection, k.Namespaced, want)
		}
	}
	if err := api.AddToScheme(s); !errs.IsAlreadyExists(err) {
		t.Errorf("second AddToScheme: %v, want AlreadyExists", err)
	}
}

func TestWebsiteSpecValidate(t *testing.T) {
	for _, tc := range []struct {
		spec  api.WebsiteSpec
		field string // "" when valid
	}{
		{api.WebsiteSpec{Domain: "blog.example.com", Replicas: 3}, ""},
		{api.WebsiteSpec{Domain: "a-b.c0.io", Replicas: 0}, ""},
		{api.WebsiteSpec{Domain: "x.io", Replicas: api.MaxReplicas}, ""},
		{api.WebsiteSpec{Domain: "", Replicas: 1}, "spec.domain"},
		{api.WebsiteSpec{Domain: "localhost", Replicas: 1}, "spec.domain"},
		{api.WebsiteSpec{Domain: "Blog.example.com", Replicas: 1}, "spec.domain"},
		{api.WebsiteSpec{Domain: "-a.example.com", Replicas: 1}, "spec.domain"},
		{api.WebsiteSpec{Domain: "a..example.com", Replicas: 1}, "spec.domain"},
		{api.WebsiteSpec{Domain: "blog.example.com", Replicas: -1}, "spec.replicas"},
		{api.WebsiteSpec{Domain: "blog.example.com", Replicas: api.MaxReplicas + 1}, "spec.replicas"},
	} {
		err := tc.spec.Validate()
		if tc.field == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.spec, err)
			}
			continue
		}
		if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != tc.field {
			t.Errorf("%+v: %v (field %q), want InvalidArgument on %s", tc.spec, err, errs.FieldOf(err), tc.field)
		}
	}
}

func TestIsServing(t *testing.T) {
	ready := func(gen, condGen, statusGen int64, st meta.ConditionStatus) *api.WebServer {
		ws := &api.WebServer{}
		ws.Generation = gen
		ws.Status.ObservedGeneration = statusGen
		ws.Status.Conditions = []meta.Condition{{Type: api.ConditionReady, Status: st, ObservedGeneration: condGen}}
		return ws
	}
	for _, tc := range []struct {
		ws   *api.WebServer
		want bool
	}{
		{ready(2, 2, 2, meta.ConditionTrue), true},
		{ready(2, 1, 2, meta.ConditionTrue), false},
		{ready(2, 2, 1, meta.ConditionTrue), false},
		{ready(2, 2, 2, meta.ConditionFalse), false},
		{&api.WebServer{}, false},
	} {
		if got := tc.ws.IsServing(); got != tc.want {
			t.Errorf("IsServing(gen %d, status %+v) = %v, want %v", tc.ws.Generation, tc.ws.Status, got, tc.want)
		}
	}
}
