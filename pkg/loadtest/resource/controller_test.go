package resource

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/ammo"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// TestRunsToSucceeded runs a small constant-rate test to the end and
// checks the numbers in its status against what the server saw.
func TestRunsToSucceeded(t *testing.T) { onEachBackend(t, testRunsToSucceeded) }

func testRunsToSucceeded(t *testing.T, b backend) {
	srv := newTarget(t)
	srv.delay.Store(int64(2 * time.Millisecond))
	st := newStoreOn(t, b)
	startReplica(t, st, Options{})
	s := spec(srv.URL, 20, time.Second)
	s.Thresholds = []string{"p99 > 5s", "error_rate > 1%"}
	create(t, st, "smoke", s)

	// Progress shows while it runs.
	waitFor(t, st, "smoke", "to show progress", func(lt *LoadTest) bool {
		return lt.Status.Phase.Final() || (lt.Status.Phase == PhaseRunning && lt.Status.Progress != nil && lt.Status.Progress.Requests > 0)
	})
	lt := waitFor(t, st, "smoke", "to end", func(lt *LoadTest) bool { return lt.Status.Phase.Final() })
	if lt.Status.Phase != PhaseSucceeded || lt.Status.Reason != ReasonPassed {
		t.Fatalf("want Succeeded/Passed: %s", describe(lt))
	}
	s1 := lt.Status
	r := s1.Results
	if r == nil || s1.Verdict == nil || !s1.Verdict.Passed {
		t.Fatalf("results %+v verdict %+v", r, s1.Verdict)
	}
	if r.Requests != 20 || r.Errors != 0 || srv.requests.Load() != 20 || r.Codes["http 200"] != 20 {
		t.Fatalf("requests %d errors %d codes %v; the server saw %d; want 20", r.Requests, r.Errors, r.Codes, srv.requests.Load())
	}
	// 20 shots spread over one second.
	if el := r.Elapsed.D(); el < 900*time.Millisecond || el > 10*time.Second {
		t.Errorf("elapsed %s", el)
	}
	if r.RPS <= 1 || r.RPS > 25 {
		t.Errorf("achieved rps %.1f", r.RPS)
	}
	// Every request took at least the server's 2ms; the corrected latency
	// is never below the service time.
	if r.ServiceTime.P50.D() < 2*time.Millisecond || r.Latency.P50 < r.ServiceTime.P50 || r.Latency.Max < r.ServiceTime.Max {
		t.Errorf("latency %+v service %+v", r.Latency, r.ServiceTime)
	}
	if r.Latency.P50 > r.Latency.P90 || r.Latency.P90 > r.Latency.P99 || r.Latency.P99 > r.Latency.P999 || r.Latency.P999 > r.Latency.Max {
		t.Errorf("quantiles out of order: %+v", r.Latency)
	}
	h, err := aggregate.DecodeHistogram(r.Histograms.Latency)
	if err != nil || h.Count() != 20 {
		t.Fatalf("latency histogram: %v, %d values", err, h.Count())
	}
	if s1.StartTime.IsZero() || !s1.EndTime.After(s1.StartTime) {
		t.Errorf("start %s end %s", s1.StartTime, s1.EndTime)
	}
	if s1.Progress == nil || s1.Progress.Requests != 20 || s1.Progress.InFlight != 0 {
		t.Errorf("final progress %+v", s1.Progress)
	}
	if c := condition(t, lt, ConditionComplete); c.Status != meta.ConditionTrue || c.Reason != ReasonPassed {
		t.Errorf("Complete %+v", c)
	}
	if c := condition(t, lt, ConditionReady); c.Status != meta.ConditionTrue {
		t.Errorf("Ready %+v", c)
	}
	if s1.ObservedGeneration != 1 || s1.RunGeneration != 1 || len(s1.Parts) != 1 || s1.Parts[0].Phase != PhaseSucceeded {
		t.Errorf("generations %d/%d parts %+v", s1.ObservedGeneration, s1.RunGeneration, s1.Parts)
	}
	lt = waitFor(t, st, "smoke", "to lose its finalizer", func(lt *LoadTest) bool { return len(lt.Finalizers) == 0 })

	// A test runs once: a spec change after the end is observed, not run.
	mutate(t, st, "smoke", func(lt *LoadTest) { lt.Spec.Pools[0].RPS[0].Ops = 40 })
	lt = waitFor(t, st, "smoke", "to observe generation 2", func(lt *LoadTest) bool { return lt.Status.ObservedGeneration == 2 })
	if lt.Status.Phase != PhaseSucceeded || lt.Status.RunGeneration != 1 || lt.Status.Results.Requests != 20 {
		t.Errorf("after a spec change: %s run generation %d", describe(lt), lt.Status.RunGeneration)
	}
	if n := srv.requests.Load(); n != 20 {
		t.Errorf("the server saw %d requests after the spec change, want 20", n)
	}
	ps := parts(t, st)
	if len(ps) != 1 {
		t.Fatalf("%d parts, want 1", len(ps))
	}
	// Progress is written every interval, not per shot: fewer writes of
	// the part than shots.
	if rv, err := meta.ParseResourceVersion(ps[0].ResourceVersion); err != nil || b.Name == "memory" && rv >= 20 {
		t.Errorf("the part was written %d times for 20 shots (%v)", rv, err)
	}
}

// TestThresholdsFail checks that failed thresholds fail the test and say
// which rule failed, with the errors counted by class and code.
func TestThresholdsFail(t *testing.T) {
	srv := newTarget(t)
	srv.status.Store(http.StatusServiceUnavailable)
	st := newStore(t)
	startReplica(t, st, Options{})
	s := spec(srv.URL, 20, 500*time.Millisecond)
	s.Thresholds = []string{"error_rate > 5%", "p99 > 10s"}
	create(t, st, "errors", s)
	lt := waitFor(t, st, "errors", "to end", func(lt *LoadTest) bool { return lt.Status.Phase.Final() })
	if lt.Status.Phase != PhaseFailed || lt.Status.Reason != ReasonThresholdsFailed {
		t.Fatalf("want Failed/ThresholdsFailed: %s", describe(lt))
	}
	v := lt.Status.Verdict
	if v == nil || v.Passed || len(v.Failures) != 1 || !strings.Contains(v.Failures[0], "error_rate > 5%") {
		t.Fatalf("verdict %+v", v)
	}
	if !strings.Contains(lt.Status.Message, "error_rate") {
		t.Errorf("message %q does not name the rule", lt.Status.Message)
	}
	r := lt.Status.Results
	if r.Requests != 10 || r.Errors != 10 || r.ErrorsByClass["status"] != 10 || r.Codes["http 503"] != 10 {
		t.Errorf("requests %d errors %d by class %v codes %v", r.Requests, r.Errors, r.ErrorsByClass, r.Codes)
	}
	if c := condition(t, lt, ConditionComplete); c.Status != meta.ConditionTrue || c.Reason != ReasonThresholdsFailed {
		t.Errorf("Complete %+v", c)
	}
}

// TestCancelMidRun cancels a running test whose requests hang: it ends
// Cancelled long before its schedule would, the requests in flight are
// canceled, and no more are sent.
func TestCancelMidRun(t *testing.T) { onEachBackend(t, testCancelMidRun) }

func testCancelMidRun(t *testing.T, b backend) {
	srv := newTarget(t)
	srv.delay.Store(int64(time.Minute))
	st := newStoreOn(t, b)
	startReplica(t, st, Options{})
	create(t, st, "long", spec(srv.URL, 10, time.Minute))
	eventually(t, "requests in flight", func() (bool, string) {
		return srv.active.Load() >= 2, "none yet"
	})
	waitPhase(t, st, "long", PhaseRunning)
	mutate(t, st, "long", func(lt *LoadTest) { lt.Spec.Cancel = true })
	cancelled := time.Now()
	lt := waitFor(t, st, "long", "to end", func(lt *LoadTest) bool { return lt.Status.Phase.Final() })
	took := time.Since(cancelled)
	if lt.Status.Phase != PhaseCancelled || lt.Status.Reason != ReasonCancelled {
		t.Fatalf("want Cancelled: %s", describe(lt))
	}
	// A minute of schedule and requests hanging for a minute: the cancel
	// ended it, not the schedule.
	if took > 30*time.Second {
		t.Errorf("cancel took %s", took)
	}
	eventually(t, "the server's requests to end", func() (bool, string) {
		return srv.active.Load() == 0, "still serving"
	})
	if srv.canceled.Load() == 0 {
		t.Errorf("no request in flight was canceled")
	}
	sent := srv.requests.Load()
	if r := lt.Status.Results; r == nil || r.Interrupted == 0 || r.Stop != "canceled" {
		t.Errorf("results %+v", r)
	}
	if c := condition(t, lt, ConditionComplete); c.Status != meta.ConditionTrue || c.Reason != ReasonCancelled {
		t.Errorf("Complete %+v", c)
	}
	time.Sleep(300 * time.Millisecond) // 10 rps: three more shots if it still fired
	if n := srv.requests.Load(); n != sent {
		t.Errorf("%d requests after the cancel", n-sent)
	}
	ps := parts(t, st)
	if len(ps) != 1 || ps[0].Status.Phase != PhaseCancelled || !ps[0].Spec.Cancel {
		t.Errorf("parts %+v", ps)
	}
}

// TestCancelBeforeStart cancels a test that waits for members: it never
// runs.
func TestCancelBeforeStart(t *testing.T) {
	srv := newTarget(t)
	st := newStore(t)
	startReplica(t, st, Options{})
	s := spec(srv.URL, 10, time.Second)
	s.Parallelism = 2 // one replica: it waits
	create(t, st, "waits", s)
	lt := waitFor(t, st, "waits", "to wait for members", func(lt *LoadTest) bool { return lt.Status.Reason == ReasonWaitingForMembers })
	if lt.Status.Phase != PhasePending || !strings.Contains(lt.Status.Message, "needs 2 live members") {
		t.Fatalf("%s", describe(lt))
	}
	if c := condition(t, lt, ConditionReady); c.Status != meta.ConditionFalse || c.Reason != ReasonWaitingForMembers {
		t.Errorf("Ready %+v", c)
	}
	mutate(t, st, "waits", func(lt *LoadTest) { lt.Spec.Cancel = true })
	lt = waitPhase(t, st, "waits", PhaseCancelled)
	if len(parts(t, st)) != 0 || srv.requests.Load() != 0 || len(lt.Finalizers) != 0 {
		t.Errorf("a cancelled pending test ran: parts %d requests %d finalizers %v", len(parts(t, st)), srv.requests.Load(), lt.Finalizers)
	}
}

// TestDeleteMidRun deletes a running test: its part is stopped (the
// server's requests canceled) before the LoadTest disappears, and the
// part goes with it.
func TestDeleteMidRun(t *testing.T) { onEachBackend(t, testDeleteMidRun) }

func testDeleteMidRun(t *testing.T, b backend) {
	srv := newTarget(t)
	srv.delay.Store(int64(time.Minute))
	st := newStoreOn(t, b)
	startReplica(t, st, Options{})
	create(t, st, "doomed", spec(srv.URL, 10, time.Minute))
	eventually(t, "requests in flight", func() (bool, string) { return srv.active.Load() >= 1, "none yet" })
	lt := waitPhase(t, st, "doomed", PhaseRunning)
	if !lt.HasFinalizer(Finalizer) {
		t.Fatalf("a running test without its finalizer: %v", lt.Finalizers)
	}

	// When the LoadTest is gone, its part must have ended already.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := st.Watch(ctx, KindLoadTest, store.WatchOptions{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	partKey := meta.Key{Namespace: ns, Name: lt.Status.Parts[0].Name}
	if err := st.Delete(context.Background(), &LoadTest{ObjectMeta: meta.ObjectMeta{Namespace: ns, Name: "doomed"}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(wait)
	for gone := false; !gone; {
		select {
		case e := <-events:
			gone = e.Type == store.Deleted
		case <-deadline:
			t.Fatalf("timed out waiting for the LoadTest to go: %s", describe(get(t, st, "doomed")))
		}
	}
	p := &LoadTestPart{}
	if err := st.Get(context.Background(), partKey, p); err == nil && p.Status.Phase != PhaseCancelled {
		t.Errorf("the LoadTest went while its part was %q", p.Status.Phase)
	}
	eventually(t, "the part to go", func() (bool, string) {
		n := len(parts(t, st))
		return n == 0, fmt.Sprintf("%d parts", n)
	})
	eventually(t, "the server's requests to end", func() (bool, string) { return srv.active.Load() == 0, "still serving" })
	if srv.canceled.Load() == 0 {
		t.Errorf("no request in flight was canceled")
	}
}

// TestBadSpec applies specs that cannot run. One the controller can judge
// (an unknown field) fails at once, naming the field, is kept as written,
// and runs once corrected; one only the runner can judge (a target the
// gun refuses) fails the run, also naming the field, and stays failed.
func TestBadSpec(t *testing.T) { onEachBackend(t, testBadSpec) }

func testBadSpec(t *testing.T, b backend) {
	srv := newTarget(t)
	st := newStoreOn(t, b)
	startReplica(t, st, Options{})
	ctx := context.Background()

	bad := &meta.Unstructured{Kind: KindLoadTest, ObjectMeta: meta.ObjectMeta{Namespace: ns, Name: "typo"}, Fields: map[string]any{
		"spec": map[string]any{"pools": []any{map[string]any{
			"id": "a", "instances": 1,
			"gun":  map[string]any{"type": "http", "tagret": srv.URL},
			"ammo": map[string]any{"type": "inline", "requests": []any{map[string]any{"uri": "/"}}},
			"rps":  []any{map[string]any{"type": "once", "times": 3}},
		}}},
	}}
	if err := st.Create(ctx, bad); err != nil {
		t.Fatal(err)
	}
	lt := waitPhase(t, st, "typo", PhaseFailed)
	if lt.Status.Reason != ReasonInvalidSpec || !strings.Contains(lt.Status.Message, "spec.pools[0].gun.tagret") {
		t.Fatalf("want InvalidSpec naming the field: %s", describe(lt))
	}
	if c := condition(t, lt, ConditionReady); c.Status != meta.ConditionFalse || c.Reason != ReasonInvalidSpec || !strings.Contains(c.Message, "tagret") {
		t.Errorf("Ready %+v", c)
	}
	if c := condition(t, lt, ConditionComplete); c.Status != meta.ConditionTrue || c.Reason != ReasonInvalidSpec {
		t.Errorf("Complete %+v", c)
	}
	if lt.Status.RunGeneration != 0 || len(lt.Finalizers) != 0 || len(parts(t, st)) != 0 {
		t.Errorf("a rejected spec was planned: %+v finalizers %v", lt.Status, lt.Finalizers)
	}
	stored := &meta.Unstructured{Kind: KindLoadTest}
	if err := st.Get(ctx, meta.KeyOf(bad), stored); err != nil {
		t.Fatal(err)
	}
	gunSpec := stored.Fields["spec"].(map[string]any)["pools"].([]any)[0].(map[string]any)["gun"].(map[string]any)
	if gunSpec["tagret"] != srv.URL {
		t.Errorf("the stored spec changed: %v", gunSpec)
	}

	// Corrected, it runs.
	delete(gunSpec, "tagret")
	gunSpec["target"] = srv.URL
	if err := st.Update(ctx, stored); err != nil {
		t.Fatal(err)
	}
	lt = waitFor(t, st, "typo", "to succeed", func(lt *LoadTest) bool { return lt.Status.Phase == PhaseSucceeded })
	if lt.Status.RunGeneration != 2 || lt.Status.Results.Requests != 3 || srv.requests.Load() != 3 {
		t.Errorf("run generation %d, %d requests, server saw %d", lt.Status.RunGeneration, lt.Status.Results.Requests, srv.requests.Load())
	}

	// The gun refuses the target when the part starts.
	s := spec("ftp://127.0.0.1:1", 10, time.Second)
	create(t, st, "ftp", s)
	lt = waitFor(t, st, "ftp", "to end and let go", func(lt *LoadTest) bool { return lt.Status.Phase.Final() && len(lt.Finalizers) == 0 })
	if lt.Status.Phase != PhaseFailed || lt.Status.Reason != ReasonInvalidSpec || !strings.Contains(lt.Status.Message, "spec.pools[0].gun") {
		t.Fatalf("want Failed/InvalidSpec naming the gun: %s", describe(lt))
	}
	if lt.Status.RunGeneration != 1 {
		t.Errorf("run generation %d", lt.Status.RunGeneration)
	}
	// It ran (and failed): a correction does not run it again.
	mutate(t, st, "ftp", func(lt *LoadTest) { lt.Spec.Pools[0].Gun.Target = srv.URL })
	lt = waitFor(t, st, "ftp", "to observe generation 2", func(lt *LoadTest) bool { return lt.Status.ObservedGeneration == 2 })
	if lt.Status.Phase != PhaseFailed || lt.Status.RunGeneration != 1 || srv.requests.Load() != 3 {
		t.Errorf("a failed run ran again: %s, server saw %d", describe(lt), srv.requests.Load())
	}
}

// TestRunnerRefusesFiles writes a part directly, past the LoadTest
// controller's checks, naming a file outside any files directory: its
// runner refuses it too and fires nothing.
func TestRunnerRefusesFiles(t *testing.T) {
	srv := newTarget(t)
	st := newStore(t)
	startReplica(t, st, Options{})
	s := spec(srv.URL, 10, time.Second)
	s.Pools[0].Ammo = ammo.Spec{Type: "file", File: "/etc/passwd", Format: ammo.URI}
	p := runPartDirectly(t, st, s.Spec)
	if p.Status.Phase != PhaseFailed || p.Status.Reason != ReasonInvalidSpec || !strings.Contains(p.Status.Message, "spec.pools[0].ammo.file") {
		t.Errorf("part %+v", p.Status)
	}
	if n := srv.requests.Load(); n != 0 {
		t.Errorf("%d shots fired", n)
	}
}
