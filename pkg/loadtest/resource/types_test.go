package resource

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
	"github.com/capstanhq/capstan/pkg/loadtest/gun"
	"github.com/capstanhq/capstan/pkg/meta"
)

// body is a config file's body, as `capstan loadtest run` reads it.
const body = `duration: 30s
overdueAfter: 5ms
thresholds:
  - p99 > 200ms for 10s
  - error_rate > 5%
pools:
  - id: api
    gun:
      type: http
      target: http://127.0.0.1:8080
      timeout: 5s
      headers: {User-Agent: capstan}
    ammo:
      type: inline
      requests:
        - {uri: /, tag: root}
        - {method: POST, uri: /orders, body: '{"id": 1}', tag: orders}
    rps:
      - {type: line, from: 1, to: 100, duration: 10s}
      - {type: const, ops: 100, duration: 20s}
    startup: [{type: once, times: 10}]
    instances: 100
`

// TestConfigDropsIn applies a config file's body as a LoadTest's spec,
// through the unstructured path of `capstan apply`, and reads back the
// spec the config package decodes from the same text.
func TestConfigDropsIn(t *testing.T) {
	want, err := config.Decode([]byte(body), nil)
	if err != nil {
		t.Fatal(err)
	}
	doc := "kind: LoadTest\nmetadata: {name: dropin}\nspec:\n  parallelism: 2\n" + indent(body, "  ")
	objs, err := meta.DecodeYAMLObjects(strings.NewReader(doc))
	if err != nil || len(objs) != 1 {
		t.Fatalf("decode: %v", err)
	}
	objs[0].Namespace = ns
	st := newStore(t)
	if err := st.Create(context.Background(), objs[0]); err != nil {
		t.Fatal(err)
	}
	lt := get(t, st, "dropin")
	if !reflect.DeepEqual(&lt.Spec.Spec, want) {
		t.Fatalf("spec differs:\n got %+v\nwant %+v", lt.Spec.Spec, *want)
	}
	if lt.Spec.Parallelism != 2 || lt.Spec.Parts() != 2 {
		t.Errorf("parallelism %d", lt.Spec.Parallelism)
	}
	if err := lt.Spec.Validate(); err != nil {
		t.Errorf("validate: %v", err)
	}
	// The JSON form decodes to the same spec.
	js, err := json.Marshal(lt.Spec)
	if err != nil {
		t.Fatal(err)
	}
	var back LoadTestSpec
	if err := json.Unmarshal(js, &back); err != nil || !reflect.DeepEqual(back, lt.Spec) {
		t.Fatalf("round trip: %v\n%s", err, js)
	}
}

// TestExampleIsValid keeps the shipped example valid.
func TestExampleIsValid(t *testing.T) {
	data, err := os.ReadFile("../../../examples/loadtest/loadtest.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := meta.DecodeYAMLObjects(strings.NewReader(string(data)))
	if err != nil || len(objs) == 0 {
		t.Fatalf("decode: %v (%d objects)", err, len(objs))
	}
	st := newStore(t)
	for _, o := range objs {
		if o.Kind != KindLoadTest {
			t.Fatalf("kind %q", o.Kind)
		}
		if o.Namespace == "" {
			o.Namespace = ns
		}
		if err := st.Create(context.Background(), o); err != nil {
			t.Fatal(err)
		}
		lt := get(t, st, o.Name)
		if err := lt.Spec.Validate(); err != nil {
			t.Errorf("%s: %v", o.Name, err)
		}
		if err := checkRunnable(&lt.Spec.Spec, gun.NewRegistry().Types(), ""); err != nil {
			t.Errorf("%s: %v", o.Name, err)
		}
	}
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n") + "\n"
}

const okPool = `{"id":"a","gun":{"type":"http","target":"http://127.0.0.1:1"},"ammo":{"type":"inline","requests":[{"uri":"/"}]},"rps":[{"type":"once","times":1}],"instances":1}`

// TestSpecErrors checks that every kind of bad spec decodes (the object
// stays readable) and that Validate names the field at fault.
func TestSpecErrors(t *testing.T) {
	pool := func(old, new string) string { return `{"pools":[` + strings.Replace(okPool, old, new, 1) + `]}` }
	cases := []struct {
		name, in, field string
	}{
		{"unknown field", pool(`"target"`, `"tagret"`), "spec.pools[0].gun.tagret"},
		{"unknown top field", `{"paralelism":2,"pools":[` + okPool + `]}`, "spec.paralelism"},
		{"wrong type", pool(`"instances":1`, `"instances":"many"`), "spec.pools[0].instances"},
		{"bad duration", pool(`"times":1}`, `"times":1,"duration":"soon"}`), "spec.pools[0].rps[0].duration"},
		{"bad parallelism type", `{"parallelism":"two","pools":[` + okPool + `]}`, "spec.parallelism"},
		{"bad cancel type", `{"cancel":"yes","pools":[` + okPool + `]}`, "spec.cancel"},
		{"negative parallelism", `{"parallelism":-1,"pools":[` + okPool + `]}`, "spec.parallelism"},
		{"huge parallelism", `{"parallelism":100000,"pools":[` + okPool + `]}`, "spec.parallelism"},
		{"negative rate", pool(`{"type":"once","times":1}`, `{"type":"const","ops":-1,"duration":"1s"}`), "spec.pools[0].rps[0].ops"},
		{"no pools", `{"pools":[]}`, "spec.pools"},
		{"report", `{"report":{"json":"/etc/out.json"},"pools":[` + okPool + `]}`, "spec.report"},
		{"bad threshold", `{"thresholds":["p99 ~ 1s"],"pools":[` + okPool + `]}`, "spec.thresholds[0]"},
	}
	for _, c := range cases {
		var s LoadTestSpec
		if err := json.Unmarshal([]byte(c.in), &s); err != nil {
			t.Errorf("%s: decode failed: %v", c.name, err)
			continue
		}
		err := s.Validate()
		if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != c.field {
			t.Errorf("%s: %v, want InvalidArgument on %s", c.name, err, c.field)
		}
	}
}

// TestRunnableChecks checks gun types and the file policy: no files
// without a files directory, and only paths inside it with one.
func TestRunnableChecks(t *testing.T) {
	guns := gun.NewRegistry().Types()
	cases := []struct {
		name, in, dir, field string
	}{
		{"ok", okPool, "", ""},
		{"unknown gun", strings.Replace(okPool, `"type":"http"`, `"type":"carrier-pigeon"`, 1), "", "spec.pools[0].gun.type"},
		{"file without dir", strings.Replace(okPool, `"requests":[{"uri":"/"}]`, `"file":"ammo.jsonl"`, 1), "", "spec.pools[0].ammo.file"},
		{"file inside dir", strings.Replace(okPool, `"requests":[{"uri":"/"}]`, `"file":"sub/ammo.jsonl"`, 1), "/srv/ammo", ""},
		{"absolute file", strings.Replace(okPool, `"requests":[{"uri":"/"}]`, `"file":"/etc/passwd"`, 1), "/srv/ammo", "spec.pools[0].ammo.file"},
		{"escaping file", strings.Replace(okPool, `"requests":[{"uri":"/"}]`, `"file":"../../etc/passwd"`, 1), "/srv/ammo", "spec.pools[0].ammo.file"},
		{"descriptor set", strings.Replace(okPool, `"type":"http"`, `"type":"grpc","descriptorSet":"/x.pb"`, 1), "/srv", "spec.pools[0].gun.descriptorSet"},
		{"tls key", strings.Replace(okPool, `"type":"http"`, `"type":"http","tls":{"keyFile":"../k.pem"}`, 1), "/srv", "spec.pools[0].gun.tls.keyFile"},
	}
	for _, c := range cases {
		var s LoadTestSpec
		if err := json.Unmarshal([]byte(`{"pools":[`+okPool+`,`+strings.Replace(c.in, `"id":"a"`, `"id":"b"`, 1)+`]}`), &s); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		err := checkRunnable(&s.Spec, guns, c.dir)
		field := strings.Replace(c.field, "pools[0]", "pools[1]", 1)
		if c.field == "" && err != nil || c.field != "" && (!errs.IsInvalidArgument(err) || errs.FieldOf(err) != field) {
			t.Errorf("%s: %v, want an error on %q", c.name, err, field)
		}
	}
}

// TestSpecIsWrittenBackAsApplied checks that a spec is written back in
// the form it was read in while it means the same (a finalizer update of
// ours must not rewrite the user's spec or bump its generation), and that
// a change is written.
func TestSpecIsWrittenBackAsApplied(t *testing.T) {
	in := `{"cancel":false,"duration":"1m","pools":[` + okPool + `]}`
	var s LoadTestSpec
	if err := json.Unmarshal([]byte(in), &s); err != nil {
		t.Fatal(err)
	}
	if out, err := json.Marshal(s); err != nil || string(out) != in {
		t.Fatalf("written back as %s (%v)", out, err)
	}
	s.Cancel = true
	out, err := json.Marshal(s)
	if err != nil || !strings.Contains(string(out), `"cancel":true`) || !strings.Contains(string(out), `"duration":"1m0s"`) {
		t.Fatalf("a changed spec written as %s (%v)", out, err)
	}
	var back LoadTestSpec
	if err := json.Unmarshal(out, &back); err != nil || !back.Cancel || back.Duration != s.Duration {
		t.Fatalf("%v: %+v", err, back)
	}
}

// TestUndecodableSpecIsKept checks that a spec that does not decode
// strictly is written back as it was: a status write or a finalizer
// update of ours never loses what the user wrote.
func TestUndecodableSpecIsKept(t *testing.T) {
	in := `{"pools":[` + strings.Replace(okPool, `"target"`, `"tagret"`, 1) + `],"parallelism":1}`
	var s LoadTestSpec
	if err := json.Unmarshal([]byte(in), &s); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(s)
	if err != nil || string(out) != in {
		t.Fatalf("written back as %s (%v)", out, err)
	}
	c := meta.DeepCopyValue(s)
	if out, _ := json.Marshal(c); string(out) != in || c.Validate() == nil {
		t.Fatalf("a copy lost the raw spec or its error: %s", out)
	}
}
