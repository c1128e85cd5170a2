package gun

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/ammo"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
)

func scenarioServer(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/login":
			if r.Method != "POST" || r.FormValue("user") == "" {
				w.WriteHeader(400)
				return
			}
			w.Header().Set("X-Session", "s-"+r.FormValue("user"))
			w.Write([]byte(`{"token":"tok-` + r.FormValue("user") + `","items":[{"id":7},{"id":9}]}`))
		case "/item":
			if r.Header.Get("Authorization") != "Bearer tok-ann" || r.Header.Get("X-Session") != "s-ann" {
				w.WriteHeader(401)
				return
			}
			w.Write([]byte("item " + r.URL.Query().Get("id") + " ok"))
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func scenarioSpec(target string) config.GunSpec {
	return config.GunSpec{Type: "scenario", Target: target, Steps: []config.StepSpec{
		{Name: "login", Method: "POST", URI: "/login?user=${user}", Extract: []config.ExtractSpec{
			{Var: "token", JSON: "token"}, {Var: "item", JSON: "items.1.id"}, {Var: "session", Header: "X-Session"},
		}},
		{Name: "item", URI: "/item?id=${item}", Headers: ammo.Headers{{Name: "Authorization", Value: "Bearer ${token}"}, {Name: "X-Session", Value: "${session}"}},
			Extract: []config.ExtractSpec{{Var: "n", Regex: `item (\d+)`}},
			Assert:  &config.AssertSpec{Status: []int{200}, BodyContains: "ok"}},
	}}
}

func runScenario(t *testing.T, spec config.GunSpec, a *ammo.Ammo) (*Shot, []aggregate.Sample) {
	t.Helper()
	f, err := NewScenario(context.Background(), &spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var mu sync.Mutex
	var steps []aggregate.Sample
	g, err := f.New(context.Background(), Env{Now: func() int64 { return 42 }, Report: func(s aggregate.Sample) {
		mu.Lock()
		steps = append(steps, s)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	s := &Shot{Ammo: a, Intended: 7}
	g.Shoot(context.Background(), s)
	return s, steps
}

func TestScenario(t *testing.T) {
	srv := scenarioServer(t)
	s, steps := runScenario(t, scenarioSpec(srv.URL), &ammo.Ammo{Vars: map[string]string{"user": "ann"}})
	if s.Class != aggregate.OK || s.Code != 200 {
		t.Fatalf("scenario: class %s code %d err %v", s.Class, s.Code, s.Err)
	}
	if len(steps) != 2 || steps[0].Tag != "login" || steps[1].Tag != "item" || steps[0].Intended != 7 || steps[1].Intended != 42 {
		t.Fatalf("steps %+v", steps)
	}

	// Another user gets a token the item step rejects: the assertion on
	// the status fails the step and the shot.
	s, steps = runScenario(t, scenarioSpec(srv.URL), &ammo.Ammo{Vars: map[string]string{"user": "bob"}})
	if s.Class != aggregate.Assertion || s.Code != 401 || len(steps) != 2 || steps[1].Class != aggregate.Assertion {
		t.Fatalf("bob: class %s code %d steps %+v", s.Class, s.Code, steps)
	}
	// A missing variable fails before any request.
	s, steps = runScenario(t, scenarioSpec(srv.URL), &ammo.Ammo{Vars: map[string]string{"name": "x"}})
	if s.Class != aggregate.Assertion || !strings.Contains(s.Err.Error(), `"user"`) || len(steps) != 1 {
		t.Fatalf("missing var: class %s err %v", s.Class, s.Err)
	}
	// A failing status without assertions is a status error.
	spec := config.GunSpec{Type: "scenario", Target: srv.URL, Steps: []config.StepSpec{{Name: "bad", URI: "/login"}}}
	if s, _ := runScenario(t, spec, &ammo.Ammo{}); s.Class != aggregate.Status || s.Code != 400 {
		t.Fatalf("bad status: class %s code %d", s.Class, s.Code)
	}
}

func TestScenarioSpecErrors(t *testing.T) {
	for _, c := range []struct {
		steps []config.StepSpec
		field string
	}{
		{nil, "steps"},
		{[]config.StepSpec{{URI: "/"}}, "steps[0].name"},
		{[]config.StepSpec{{Name: "a"}}, "steps[0].uri"},
		{[]config.StepSpec{{Name: "a", URI: "/"}, {Name: "a", URI: "/"}}, "steps[1].name"},
		{[]config.StepSpec{{Name: "a", URI: "/", Extract: []config.ExtractSpec{{JSON: "x"}}}}, "steps[0].extract[0].var"},
		{[]config.StepSpec{{Name: "a", URI: "/", Extract: []config.ExtractSpec{{Var: "v"}}}}, "steps[0].extract[0]"},
		{[]config.StepSpec{{Name: "a", URI: "/", Extract: []config.ExtractSpec{{Var: "v", JSON: "a", Header: "b"}}}}, "steps[0].extract[0]"},
		{[]config.StepSpec{{Name: "a", URI: "/", Extract: []config.ExtractSpec{{Var: "v", Regex: "("}}}}, "steps[0].extract[0].regex"},
		{[]config.StepSpec{{Name: "a", URI: "/", Extract: []config.ExtractSpec{{Var: "v", Regex: "x"}}}}, "steps[0].extract[0].regex"},
		{[]config.StepSpec{{Name: "a", URI: "/", Assert: &config.AssertSpec{Status: []int{99}}}}, "steps[0].assert.status[0]"},
		{[]config.StepSpec{{Name: "a", URI: "/", Method: "GE T"}}, "steps[0].method"},
		{[]config.StepSpec{{Name: "a", URI: "/"}, {Name: "b", URI: "/", Headers: ammo.Headers{{Name: "X:Y", Value: "1"}}}}, "steps[1].headers[0]"},
	} {
		spec := config.GunSpec{Type: "scenario", Target: "http://127.0.0.1:1", Steps: c.steps}
		_, err := NewScenario(context.Background(), &spec, nil)
		if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != c.field {
			t.Errorf("%+v: err %v, want InvalidArgument on %q", c.steps, err, c.field)
		}
	}
}

func TestExpandAndJSONPath(t *testing.T) {
	got, err := expand("a${x}b${y}${x}", map[string]string{"x": "1", "y": "2"})
	if err != nil || got != "a1b21" {
		t.Fatalf("expand: %q %v", got, err)
	}
	if _, err := expand("a${x", nil); err == nil {
		t.Fatal("unclosed placeholder accepted")
	}
	doc := []byte(`{"a":{"b":[1,{"c":"d"}],"n":12345678901234567890,"o":{"k":true}}}`)
	for path, want := range map[string]string{"a.b.1.c": "d", "a.b.0": "1", "a.n": "12345678901234567890", "a.o": `{"k":true}`} {
		if v, ok := jsonPath(doc, path); !ok || v != want {
			t.Errorf("%s = %q,%v want %q", path, v, ok, want)
		}
	}
	for _, path := range []string{"a.x", "a.b.2", "a.b.-1", "a.b.c", "a.b.1.c.d"} {
		if v, ok := jsonPath(doc, path); ok {
			t.Errorf("%s found %q", path, v)
		}
	}
}
