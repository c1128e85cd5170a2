package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/engine"
)

// runCLI runs `loadtest run` with args and returns stdout, stderr and the
// error.
func runCLI(ctx context.Context, args ...string) (string, string, error) {
	cmd := newLoadTestCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(append([]string{"run"}, args...))
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

func exitCodeOf(err error) int {
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	if err != nil {
		return 1
	}
	return 0
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "test.yaml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const cliConfig = `
thresholds: ["${env:CAPSTAN_TEST_RULE:-p99 > 10s}"]
report: {json: out/result.json, html: out/report.html, phout: out/phout.log}
pools:
  - id: web
    gun: {type: http, target: "${env:CAPSTAN_TEST_TARGET}"}
    ammo:
      type: inline
      requests: [{uri: /a, tag: a}, {uri: /fail, tag: f}]
    rps: [{type: const, ops: 100, duration: 500ms}]
    instances: 4
`

func testServer(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(500)
			return
		}
		if r.URL.Path == "/slow" {
			select {
			case <-time.After(time.Hour):
			case <-r.Context().Done():
			}
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestLoadTestRunWritesReports(t *testing.T) {
	srv := testServer(t)
	t.Setenv("CAPSTAN_TEST_TARGET", srv.URL)
	path := writeConfig(t, cliConfig)
	dir := filepath.Dir(path)
	os.Mkdir(filepath.Join(dir, "out"), 0o755)
	stdout, stderr, err := runCLI(context.Background(), "--metrics-addr", "127.0.0.1:0", path)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr)
	}
	for _, want := range []string{"stopped: done", "50 shots", "tag a", "http 500", "verdict: PASSED"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "out/result.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res engine.Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.Total.Count != 50 || res.Tags["f"].Errors != 25 {
		t.Fatalf("result: %d shots, tag f %+v", res.Total.Count, res.Tags["f"])
	}
	phout, _ := os.ReadFile(filepath.Join(dir, "out/phout.log"))
	if n := strings.Count(string(phout), "\n"); n != 50 {
		t.Fatalf("phout has %d lines", n)
	}
	html, _ := os.ReadFile(filepath.Join(dir, "out/report.html"))
	if !strings.Contains(string(html), "<svg") {
		t.Fatal("HTML report without charts")
	}
}

func TestLoadTestThresholdExitCode(t *testing.T) {
	srv := testServer(t)
	t.Setenv("CAPSTAN_TEST_TARGET", srv.URL)
	t.Setenv("CAPSTAN_TEST_RULE", "error_rate > 10%")
	path := writeConfig(t, cliConfig)
	os.Mkdir(filepath.Join(filepath.Dir(path), "out"), 0o755)
	stdout, _, err := runCLI(context.Background(), "-q", path)
	if exitCodeOf(err) != 3 || !strings.Contains(err.Error(), "error_rate > 10%") {
		t.Fatalf("err %v (exit %d), want exit 3 naming the rule", err, exitCodeOf(err))
	}
	if !strings.Contains(stdout, "verdict: FAILED") {
		t.Fatalf("summary:\n%s", stdout)
	}
}

func TestLoadTestBadConfig(t *testing.T) {
	path := writeConfig(t, "pools:\n  - id: a\n    gun: {type: http, tagret: x}\n")
	_, _, err := runCLI(context.Background(), path)
	if !errs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "pools[0].gun.tagret") || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("err %v", err)
	}
	if exitCodeOf(err) != 1 {
		t.Fatalf("exit %d", exitCodeOf(err))
	}
	if _, _, err := runCLI(context.Background(), "--share", "3/2", path); err == nil {
		t.Fatal("bad share accepted")
	}
}

// TestLoadTestInterrupt cancels a run whose requests hang: the command
// returns promptly with exit code 130 and still writes the reports.
func TestLoadTestInterrupt(t *testing.T) {
	srv := testServer(t)
	t.Setenv("CAPSTAN_TEST_TARGET", srv.URL)
	cfg := strings.Replace(cliConfig, "{uri: /a, tag: a}, {uri: /fail, tag: f}", "{uri: /a}, {uri: /slow}", 1)
	cfg = strings.Replace(cfg, "duration: 500ms", "duration: 1h", 1)
	path := writeConfig(t, cfg)
	dir := filepath.Dir(path)
	os.Mkdir(filepath.Join(dir, "out"), 0o755)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(700 * time.Millisecond)
		cancel()
	}()
	start := time.Now()
	stdout, _, err := runCLI(ctx, "-q", path)
	if exitCodeOf(err) != 130 {
		t.Fatalf("err %v (exit %d), want 130", err, exitCodeOf(err))
	}
	if time.Since(start) > 30*time.Second {
		t.Fatalf("took %s to stop", time.Since(start))
	}
	if !strings.Contains(stdout, "stopped: canceled") || !strings.Contains(stdout, "interrupted 4") {
		t.Fatalf("summary:\n%s", stdout)
	}
	if _, err := os.Stat(filepath.Join(dir, "out/result.json")); err != nil {
		t.Fatal("no JSON report after interrupt")
	}
}

func TestParseShare(t *testing.T) {
	for in, ok := range map[string]bool{"": true, "0/1": true, "2/3": true, "3/3": false, "-1/2": false, "a/b": false, "1": false, "0/0": false} {
		if _, err := parseLoadTestShare(in); (err == nil) != ok {
			t.Errorf("%q: err %v", in, err)
		}
	}
}

// TestLoadTestGunErrorsNameLine runs configs that decode but whose guns
// cannot be built: the command fails with exit status 1 and a message
// naming the file, the field and its line.
func TestLoadTestGunErrorsNameLine(t *testing.T) {
	const head = `pools:
  - id: web
    gun: {type: http, target: "http://127.0.0.1:1"}
    ammo: {type: inline, requests: [{uri: /}]}
    rps: [{type: once, times: 1}]
    instances: 1
  - id: second
`
	const tail = `    ammo: {type: inline, requests: [{uri: /, call: a.B/C}]}
    rps: [{type: once, times: 1}]
    instances: 1
`
	for _, c := range []struct {
		gun, want string
	}{
		{"    gun:\n      type: grpc\n      target: 127.0.0.1:1\n      descriptorSet: junk.pb\n",
			"test.yaml.pools[1].gun.descriptorSet: line 11: not a FileDescriptorSet"},
		{"    gun:\n      type: laser\n", "test.yaml.pools[1].gun.type: line 9: unknown gun type \"laser\""},
		{"    gun:\n      type: http\n      target: https://127.0.0.1:1\n      tls: {caFile: ca.pem}\n",
			"test.yaml.pools[1].gun.tls.caFile: line 11: no PEM certificates in ca.pem"},
		{"    gun:\n      type: scenario\n      target: http://127.0.0.1:1\n      steps:\n        - {name: a, uri: /, extract: [{var: v, regex: \"(\"}]}\n",
			"test.yaml.pools[1].gun.steps[0].extract[0].regex: line 12: error parsing regexp"},
	} {
		path := writeConfig(t, head+c.gun+tail)
		dir := filepath.Dir(path)
		os.WriteFile(filepath.Join(dir, "junk.pb"), []byte("junk"), 0o644)
		os.WriteFile(filepath.Join(dir, "ca.pem"), []byte("not PEM"), 0o644)
		_, _, err := runCLI(context.Background(), "-q", path)
		if err == nil {
			t.Fatalf("%s: accepted", c.want)
		}
		// What main prints, and its exit status.
		if msg := "capstan: " + err.Error(); !strings.Contains(msg, c.want) || exitCode(err) != 1 {
			t.Errorf("exit %d, message %q\nwant it to contain %q", exitCode(err), msg, c.want)
		}
	}
}
