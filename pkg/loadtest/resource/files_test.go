package resource

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/ammo"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
	"github.com/capstanhq/capstan/pkg/loadtest/gun"
	"github.com/capstanhq/capstan/pkg/manager"
)

// filesDir makes a files directory holding ammo/requests.jsonl (4
// requests), ammo/link.jsonl (a symbolic link to it) and links that lead
// out of it to outside.jsonl next to it: ammo/out.jsonl (relative) and
// abs.jsonl (absolute). It returns the directory and the outside file.
func filesDir(t *testing.T) (dir, outside string) {
	t.Helper()
	base := t.TempDir()
	dir = filepath.Join(base, "files")
	outside = filepath.Join(base, "outside.jsonl")
	lines := `{"uri":"/1"}` + "\n" + `{"uri":"/2"}` + "\n" + `{"uri":"/3"}` + "\n" + `{"uri":"/4"}` + "\n"
	for _, err := range []error{
		os.MkdirAll(filepath.Join(dir, "ammo"), 0o755),
		os.WriteFile(filepath.Join(dir, "ammo", "requests.jsonl"), []byte(lines), 0o644),
		os.WriteFile(outside, []byte(lines), 0o644),
		os.Symlink("requests.jsonl", filepath.Join(dir, "ammo", "link.jsonl")),
		os.Symlink("../../outside.jsonl", filepath.Join(dir, "ammo", "out.jsonl")),
		os.Symlink(outside, filepath.Join(dir, "abs.jsonl")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir, outside
}

// fileSpec is spec with its ammo read once (passes) from file.
func fileSpec(url, file string, passes int64) LoadTestSpec {
	s := spec(url, 50, 10*time.Second)
	s.Pools[0].Ammo = ammo.Spec{Type: "file", File: file, Passes: passes}
	return s
}

// TestLoadTestReadsFilesFromDir runs LoadTests whose ammo is a file of the
// controller's files directory, and checks that every way out of it is
// refused with the field named and nothing fired.
func TestLoadTestReadsFilesFromDir(t *testing.T) {
	dir, outside := filesDir(t)
	srv := newTarget(t)
	st := newStore(t)
	startReplica(t, st, Options{Dir: dir})

	// Two passes over four requests: eight shots, then the ammo is done.
	create(t, st, "from-file", fileSpec(srv.URL, "ammo/requests.jsonl", 2))
	lt := waitFor(t, st, "from-file", "to end", func(lt *LoadTest) bool { return lt.Status.Phase.Final() })
	if lt.Status.Phase != PhaseSucceeded || lt.Status.Results == nil || lt.Status.Results.Requests != 8 || lt.Status.Results.Stop != "done" {
		t.Fatalf("want Succeeded with 8 requests: %s results %+v", describe(lt), lt.Status.Results)
	}
	// A link that stays inside the directory is followed.
	create(t, st, "via-link", fileSpec(srv.URL, "ammo/link.jsonl", 1))
	lt = waitFor(t, st, "via-link", "to end", func(lt *LoadTest) bool { return lt.Status.Phase.Final() })
	if lt.Status.Phase != PhaseSucceeded || lt.Status.Results.Requests != 4 {
		t.Fatalf("want Succeeded with 4 requests: %s", describe(lt))
	}
	if n := srv.requests.Load(); n != 12 {
		t.Fatalf("the server saw %d requests, want 12", n)
	}

	tlsSpec := func(ca string) LoadTestSpec {
		s := spec("https://127.0.0.1:1", 10, time.Second)
		s.Pools[0].Gun.TLS = &config.TLSSpec{CAFile: ca}
		return s
	}
	for _, c := range []struct {
		name  string
		spec  LoadTestSpec
		field string
		why   string
	}{
		{"dot-dot", fileSpec(srv.URL, "../outside.jsonl", 1), "spec.pools[0].ammo.file", "leaves the files directory"},
		{"absolute", fileSpec(srv.URL, outside, 1), "spec.pools[0].ammo.file", "is absolute"},
		{"relative-link", fileSpec(srv.URL, "ammo/out.jsonl", 1), "spec.pools[0].ammo.file", "through a symbolic link"},
		{"absolute-link", fileSpec(srv.URL, "abs.jsonl", 1), "spec.pools[0].ammo.file", "through a symbolic link"},
		{"tls-link", tlsSpec("ammo/out.jsonl"), "spec.pools[0].gun.tls.caFile", "through a symbolic link"},
	} {
		create(t, st, c.name, c.spec)
		lt := waitPhase(t, st, c.name, PhaseFailed)
		if lt.Status.Reason != ReasonInvalidSpec || !strings.Contains(lt.Status.Message, c.field+": ") ||
			!strings.Contains(lt.Status.Message, c.why) {
			t.Errorf("%s: want InvalidSpec naming %s (%s): %s", c.name, c.field, c.why, describe(lt))
		}
		if cond := condition(t, lt, ConditionComplete); cond.Reason != ReasonInvalidSpec || !strings.Contains(cond.Message, c.field) {
			t.Errorf("%s: Complete condition %+v", c.name, cond)
		}
	}
	if n := srv.requests.Load(); n != 12 {
		t.Fatalf("the server saw %d requests after the refused tests, want 12", n)
	}
}

// TestLoadTestFilesNeedDir: without a files directory, a LoadTest naming
// a file fails, saying how to give the runners one.
func TestLoadTestFilesNeedDir(t *testing.T) {
	srv := newTarget(t)
	st := newStore(t)
	startReplica(t, st, Options{})
	create(t, st, "no-dir", fileSpec(srv.URL, "ammo/requests.jsonl", 1))
	lt := waitPhase(t, st, "no-dir", PhaseFailed)
	if lt.Status.Reason != ReasonInvalidSpec || !strings.Contains(lt.Status.Message, "spec.pools[0].ammo.file: ") ||
		!strings.Contains(lt.Status.Message, "--loadtest-dir") {
		t.Fatalf("want InvalidSpec naming the field and --loadtest-dir: %s", describe(lt))
	}
}

// TestRunnerConfinesFiles writes a part directly, past the LoadTest
// controller, naming a link out of the files directory: the runner
// refuses it too.
func TestRunnerConfinesFiles(t *testing.T) {
	dir, _ := filesDir(t)
	srv := newTarget(t)
	st := newStore(t)
	startReplica(t, st, Options{Dir: dir})
	s := fileSpec(srv.URL, "ammo/out.jsonl", 1)
	p := runPartDirectly(t, st, s.Spec)
	if p.Status.Phase != PhaseFailed || p.Status.Reason != ReasonInvalidSpec ||
		!strings.Contains(p.Status.Message, "spec.pools[0].ammo.file: ") || !strings.Contains(p.Status.Message, "symbolic link") {
		t.Errorf("part %+v", p.Status)
	}
	if n := srv.requests.Load(); n != 0 {
		t.Errorf("%d shots fired", n)
	}
}

// TestCheckRunnableFollowsLinks: with a files directory it can open,
// the check follows symbolic links; without one, it checks the paths as
// written and leaves the rest to the runners.
func TestCheckRunnableFollowsLinks(t *testing.T) {
	dir, _ := filesDir(t)
	guns := gun.NewRegistry().Types()
	s := fileSpec("http://127.0.0.1:1", "ammo/out.jsonl", 1)
	if err := checkRunnable(&s.Spec, guns, dir); !errs.IsInvalidArgument(err) || errs.FieldOf(err) != "spec.pools[0].ammo.file" ||
		!strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("link out: %v", err)
	}
	if err := checkRunnable(&s.Spec, guns, filepath.Join(dir, "missing")); err != nil {
		t.Errorf("paths as written: %v", err)
	}
	s = fileSpec("http://127.0.0.1:1", "ammo/link.jsonl", 1)
	if err := checkRunnable(&s.Spec, guns, dir); err != nil {
		t.Errorf("link inside: %v", err)
	}
}

// TestSetupRejectsMissingDir: a files directory that cannot be opened is
// an error of SetupWithManager, not of every LoadTest.
func TestSetupRejectsMissingDir(t *testing.T) {
	mgr, err := manager.New(manager.Options{Store: newStore(t), Logger: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	err = SetupWithManager(mgr, Options{Dir: filepath.Join(t.TempDir(), "missing")})
	if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != "dir" {
		t.Fatalf("a missing files directory: %v", err)
	}
}
