package engine

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/ammo"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
	"github.com/capstanhq/capstan/pkg/loadtest/files"
	"github.com/capstanhq/capstan/pkg/loadtest/gun"
)

// lineOf returns the 1-based line of text holding marker.
func lineOf(t *testing.T, text, marker string) int {
	t.Helper()
	i := strings.Index(text, marker)
	if i < 0 {
		t.Fatalf("no %q in the config", marker)
	}
	return strings.Count(text[:i], "\n") + 1
}

// TestNewErrorsNameTheirLine decodes YAML configs that are valid as
// configs but whose guns or ammo cannot be built, and checks that New's
// error names the field and its line in the file.
func TestNewErrorsNameTheirLine(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "junk.pb"), []byte("not a descriptor set"), 0o644)
	reg := gun.NewRegistry()
	reg.Register("sized", func(context.Context, *config.GunSpec, files.FS) (gun.Factory, error) {
		return nil, errs.Invalid("options.size", "must be at most 10")
	})
	const ok = `  - id: fine
    gun: {type: http, target: "http://127.0.0.1:1"}
    ammo: {type: inline, requests: [{uri: /}]}
    rps: [{type: once, times: 1}]
    instances: 1
`
	const tail = `    ammo: {type: inline, requests: [{uri: /, call: a.B/C}]}
    rps: [{type: once, times: 1}]
    instances: 1
`
	for _, c := range []struct {
		name   string
		pool   string // the second pool, up to its ammo
		field  string
		marker string // the text on the line the error must name
		code   errs.Code
	}{
		{"descriptor set", `  - id: rpc
    gun:
      type: grpc
      target: 127.0.0.1:1
      descriptorSet: junk.pb
`, "pools[1].gun.descriptorSet", "descriptorSet: junk.pb", errs.InvalidArgument},
		{"unknown gun type", `  - id: beam
    gun:
      target: x
      type: laser
`, "pools[1].gun.type", "type: laser", errs.InvalidArgument},
		{"custom gun option", `  - id: custom
    gun:
      type: sized
      options:
        size: 11
`, "pools[1].gun.options.size", "options:", errs.InvalidArgument},
		{"TLS file", `  - id: tls
    gun:
      type: http
      target: https://127.0.0.1:1
      tls:
        caFile: missing-ca.pem
`, "pools[1].gun.tls.caFile", "caFile: missing-ca.pem", errs.InvalidArgument},
		{"extraction regex", `  - id: flow
    gun:
      type: scenario
      target: http://127.0.0.1:1
      steps:
        - {name: login, uri: /login}
        - name: item
          uri: /item
          extract:
            - {var: id, regex: "id=\\d+"}
`, "pools[1].gun.steps[1].extract[0].regex", `{var: id, regex:`, errs.InvalidArgument},
		{"step method", `  - id: flow
    gun:
      type: scenario
      target: http://127.0.0.1:1
      steps:
        - name: login
          method: "PO ST"
          uri: /login
`, "pools[1].gun.steps[0].method", `method: "PO ST"`, errs.InvalidArgument},
		{"gRPC reflection", `  - id: rpc
    gun:
      type: grpc
      connectTimeout: 100ms
      target: 127.0.0.1:1
`, "pools[1].gun.target", "target: 127.0.0.1:1", errs.Unavailable},
	} {
		t.Run(c.name, func(t *testing.T) {
			text := "pools:\n" + ok + c.pool + tail
			spec, lines, err := config.DecodeLines([]byte(text), nil)
			if err != nil {
				t.Fatalf("the config itself is invalid: %v\n%s", err, text)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = New(ctx, spec, Options{Registry: reg, Dir: dir, Lines: lines})
			want := c.field + ": line " + strconv.Itoa(lineOf(t, text, c.marker)) + ": "
			if errs.CodeOf(err) != c.code || errs.FieldOf(err) != c.field || !strings.Contains(err.Error(), want) {
				t.Fatalf("err %v\nwant %s on %q", err, c.code, want)
			}
			t.Log(err)
			// Without lines, the same error without a line.
			_, err = New(ctx, spec, Options{Registry: reg, Dir: dir})
			if errs.FieldOf(err) != c.field || strings.Contains(err.Error(), "line ") {
				t.Fatalf("without lines: %v", err)
			}
		})
	}
}

func TestNewAmmoErrorsNameTheirLine(t *testing.T) {
	text := `pools:
  - id: web
    gun: {type: http, target: "http://127.0.0.1:1"}
    ammo:
      type: file
      file: missing.jsonl
    rps: [{type: once, times: 1}]
    instances: 1
`
	spec, lines, err := config.DecodeLines([]byte(text), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(context.Background(), spec, Options{Dir: t.TempDir(), Lines: lines})
	if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != "pools[0].ammo.file" || !strings.Contains(err.Error(), "pools[0].ammo.file: line 6: opening ammo") {
		t.Fatalf("err %v", err)
	}
}

// TestNewOpensFilesThroughFiles builds pools whose files lead out of a
// files.Root: New refuses each, naming the field.
func TestNewOpensFilesThroughFiles(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "files")
	os.Mkdir(dir, 0o755)
	os.WriteFile(filepath.Join(base, "secret"), []byte(`{"uri":"/"}`+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "ammo.jsonl"), []byte(`{"uri":"/"}`+"\n"), 0o644)
	os.Symlink("../secret", filepath.Join(dir, "out"))
	root, err := files.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	pool := func() config.Pool {
		p := httpPool("http://127.0.0.1:1", []config.ScheduleSpec{{Type: "once", Times: 1}}, 1)
		p.Ammo = ammo.Spec{Type: "file", File: "ammo.jsonl"}
		return p
	}
	// Inside: fine.
	e, err := New(context.Background(), &config.Spec{Pools: []config.Pool{pool()}}, Options{Files: root})
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	for _, c := range []struct {
		mut   func(p *config.Pool)
		field string
	}{
		{func(p *config.Pool) { p.Ammo.File = "out" }, "pools[0].ammo.file"},
		{func(p *config.Pool) { p.Ammo.File, p.Ammo.Stream = "out", true }, "pools[0].ammo.file"},
		{func(p *config.Pool) { p.Ammo.File = "../secret" }, "pools[0].ammo.file"},
		{func(p *config.Pool) {
			p.Gun.Target = "https://127.0.0.1:1"
			p.Gun.TLS = &config.TLSSpec{CAFile: "out"}
		}, "pools[0].gun.tls.caFile"},
		{func(p *config.Pool) {
			p.Gun = config.GunSpec{Type: "grpc", Target: "127.0.0.1:1", DescriptorSet: "out"}
		}, "pools[0].gun.descriptorSet"},
	} {
		p := pool()
		c.mut(&p)
		_, err := New(context.Background(), &config.Spec{Pools: []config.Pool{p}}, Options{Files: root})
		if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != c.field || !strings.Contains(err.Error(), "leads out of the files directory") &&
			!strings.Contains(err.Error(), "leaves the files directory") {
			t.Errorf("%s: %v", c.field, err)
		}
	}
}
