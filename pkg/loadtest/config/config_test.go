package config

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/ammo"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDecodeFull(t *testing.T) {
	data, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := Decode(data, env(map[string]string{"TARGET": "http://127.0.0.1:9999"}))
	if err != nil {
		t.Fatal(err)
	}
	p := spec.Pools[0]
	if p.Gun.Target != "http://127.0.0.1:9999" || p.Gun.Timeout.D() != 5*time.Second || spec.Duration.D() != 2*time.Minute {
		t.Fatalf("gun %+v duration %s", p.Gun, spec.Duration.D())
	}
	if want := (ammo.Headers{{Name: "User-Agent", Value: "capstan"}, {Name: "Accept", Value: "*/*"}}); !reflect.DeepEqual(p.Gun.Headers, want) {
		t.Fatalf("headers lost their order: %v", p.Gun.Headers)
	}
	if p.Ammo.Requests[1].Body != `{"id": 1}` || p.Ammo.Requests[1].Headers[0].Value != "application/json" {
		t.Fatalf("ammo %+v", p.Ammo.Requests[1])
	}
	plan, _ := p.Plan()
	// line 1→100 over 10s (505 tokens) + 6000 + steps 100,150,200 × 10s.
	if plan.Len() != 505+6000+4500 {
		t.Fatalf("plan has %d tokens", plan.Len())
	}
	rules, _ := spec.Rules()
	if len(rules) != 2 || rules[0].For != 10*time.Second {
		t.Fatalf("rules %+v", rules)
	}
	// The default applies without the variable.
	spec, err = Decode(data, nil)
	if err != nil || spec.Pools[0].Gun.Target != "http://127.0.0.1:8080" {
		t.Fatalf("default: %v %v", err, spec)
	}
	// JSON round trip: the spec is also the JSON of a resource.
	js, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(js, nil)
	if err != nil {
		t.Fatalf("JSON form does not decode: %v\n%s", err, js)
	}
	if !reflect.DeepEqual(back, spec) {
		t.Fatalf("round trip differs:\n%+v\n%+v", back, spec)
	}
}

const base = `pools:
  - id: a
    gun: {type: http, target: "http://127.0.0.1:1"}
    ammo: {type: inline, requests: [{uri: /}]}
    rps: [{type: const, ops: 10, duration: 1s}]
    instances: 2
`

func TestDecodeErrors(t *testing.T) {
	cases := []struct {
		name, in, field, line string
	}{
		{"unknown top key", base + "thresholds: []\nrepot: {}\n", "repot", "line 8"},
		{"unknown nested key", strings.Replace(base, "target:", "tagret:", 1), "pools[0].gun.tagret", "line 3"},
		{"suggestion", strings.Replace(base, "instances: 2", "instance: 2", 1), "pools[0].instance", "did you mean \"instances\""},
		{"wrong type", strings.Replace(base, "instances: 2", "instances: many", 1), "pools[0].instances", "line 6"},
		{"fraction for int", strings.Replace(base, "instances: 2", "instances: 1.5", 1), "pools[0].instances", "line 6"},
		{"bad duration", strings.Replace(base, "duration: 1s", "duration: soon", 1), "pools[0].rps[0].duration", "line 5"},
		{"list expected", strings.Replace(base, "rps: [{type: const, ops: 10, duration: 1s}]", "rps: {type: const}", 1), "pools[0].rps", "want a list"},
		{"mapping expected", base + "report: yes\n", "report", "want a mapping"},
		{"zero instances", strings.Replace(base, "instances: 2", "instances: 0", 1), "pools[0].instances", "line 6"},
		{"missing instances", strings.Replace(base, "    instances: 2\n", "", 1), "pools[0].instances", "line 2"},
		{"unknown schedule", strings.Replace(base, "type: const", "type: burst", 1), "pools[0].rps[0].type", "line 5"},
		{"field of other schedule", strings.Replace(base, "ops: 10", "ops: 10, from: 1", 1), "pools[0].rps[0].from", "line 5"},
		{"negative rate", strings.Replace(base, "ops: 10", "ops: -1", 1), "pools[0].rps[0].ops", "line 5"},
		{"missing duration", strings.Replace(base, ", duration: 1s", "", 1), "pools[0].rps[0].duration", "line 5"},
		{"no pools", "thresholds: []\n", "pools", ""},
		{"bad threshold", base + "thresholds: [\"p99 ~ 1s\"]\n", "thresholds[0]", "line 7"},
		{"duplicate pool", strings.Replace(base+base[6:], "pools:\n", "pools:\n", 1), "pools[1].id", "line 8"},
		{"bad ammo", strings.Replace(base, "{uri: /}", "{url: /}", 1), "pools[0].ammo.requests[0].url", "line 4"},
		{"ammo type", strings.Replace(base, "type: inline", "type: disk", 1), "pools[0].ammo.type", "line 4"},
		{"missing gun type", strings.Replace(base, "type: http, ", "", 1), "pools[0].gun.type", "line 3"},
		{"unset env", strings.Replace(base, "http://127.0.0.1:1", "${env:NOPE_UNSET}", 1), "line 3", "NOPE_UNSET"},
		{"unknown timer", base + "timer: exact\n", "timer", "line 7"},
		{"header value type", strings.Replace(base, "target:", "headers: {A: [1]}, target:", 1), "pools[0].gun.headers", "line 3"},
	}
	for _, c := range cases {
		_, err := Decode([]byte(c.in), nil)
		if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != c.field || !strings.Contains(err.Error(), c.line) {
			t.Errorf("%s: err %v\nwant InvalidArgument on %q mentioning %q", c.name, err, c.field, c.line)
		}
	}
	for _, in := range []string{"", "[1, 2]", "pools: [", "a: &x [*x]", "\t- bad"} {
		if _, err := Decode([]byte(in), nil); !errs.IsInvalidArgument(err) {
			t.Errorf("%q: err %v, want InvalidArgument", in, err)
		}
	}
}

func TestDecodeAcceptsJSONAndAnchors(t *testing.T) {
	in := `{"pools": [{"id": "a", "gun": {"type": "http", "target": "http://127.0.0.1:1"},
	"ammo": {"type": "inline", "requests": [{"uri": "/"}]}, "rps": [{"type": "once", "times": 3}], "instances": 1}]}`
	if _, err := Decode([]byte(in), nil); err != nil {
		t.Fatal(err)
	}
	anchors := `gun: &g {type: http, target: "http://127.0.0.1:1"}
pools:
  - {id: a, gun: *g, ammo: {type: inline, requests: [{uri: /}]}, rps: [{type: once, times: 1}], instances: 1}
`
	if _, err := Decode([]byte(anchors), nil); errs.FieldOf(err) != "gun" {
		t.Fatalf("unknown top-level anchor holder: %v", err)
	}
	anchors = `pools:
  - {id: a, gun: &g {type: http, target: "http://127.0.0.1:1"}, ammo: {type: inline, requests: [{uri: /}]}, rps: [{type: once, times: 1}], instances: 1}
  - {id: b, gun: *g, ammo: {type: inline, requests: [{uri: /}]}, rps: [{type: once, times: 1}], instances: 1}
`
	spec, err := Decode([]byte(anchors), nil)
	if err != nil || spec.Pools[1].Gun.Target != "http://127.0.0.1:1" {
		t.Fatalf("alias: %v", err)
	}
}

func TestExpandEnv(t *testing.T) {
	out, err := ExpandEnv([]byte("a: ${env:A}\nb: ${env:B:-dflt} ${env:A}\nc: ${env:C:-}\n"), env(map[string]string{"A": "1"}))
	if err != nil || string(out) != "a: 1\nb: dflt 1\nc: \n" {
		t.Fatalf("%q %v", out, err)
	}
	_, err = ExpandEnv([]byte("a: 1\nb: ${env:MISSING}\n"), env(nil))
	if errs.FieldOf(err) != "line 2" || !strings.Contains(err.Error(), "MISSING") {
		t.Fatalf("missing: %v", err)
	}
}

func TestDurationJSON(t *testing.T) {
	var d Duration
	for in, want := range map[string]time.Duration{`"1m30s"`: 90 * time.Second, `2.5`: 2500 * time.Millisecond, `"0s"`: 0} {
		if err := json.Unmarshal([]byte(in), &d); err != nil || d.D() != want {
			t.Errorf("%s: %s %v", in, d.D(), err)
		}
	}
	for _, in := range []string{`"fast"`, `true`, `[1]`} {
		if err := json.Unmarshal([]byte(in), &d); err == nil {
			t.Errorf("%s accepted", in)
		}
	}
}
