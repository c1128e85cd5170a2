package resource

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/meta"
)

// TestParallelMergesParts spreads a test over three processes (each with
// its own Membership and controllers, all coordinating at once on one
// store). With two live it waits; with the third it runs one share on each
// from a common start, and the merged results are exactly the union of
// the parts'.
func TestParallelMergesParts(t *testing.T) {
	srv := newTarget(t)
	srv.delay.Store(int64(time.Millisecond))
	st := newStore(t)
	startReplica(t, st, Options{})
	startReplica(t, st, Options{})
	s := spec(srv.URL, 60, time.Second)
	s.Parallelism = 3
	s.Thresholds = []string{"p99 > 10s"}
	create(t, st, "wide", s)
	lt := waitFor(t, st, "wide", "to wait for a third member", func(lt *LoadTest) bool {
		return lt.Status.Reason == ReasonWaitingForMembers && strings.Contains(lt.Status.Message, "sees 2")
	})
	if lt.Status.Phase != PhasePending || len(parts(t, st)) != 0 || srv.requests.Load() != 0 {
		t.Fatalf("with two members: %s", describe(lt))
	}

	startReplica(t, st, Options{})
	lt = waitFor(t, st, "wide", "to end", func(lt *LoadTest) bool { return lt.Status.Phase.Final() })
	if lt.Status.Phase != PhaseSucceeded {
		t.Fatalf("want Succeeded: %s", describe(lt))
	}
	ps := parts(t, st)
	if len(ps) != 3 {
		t.Fatalf("%d parts", len(ps))
	}
	members := map[string]bool{}
	var sum int64
	union := aggregate.NewHistogram()
	unionService := aggregate.NewHistogram()
	for _, p := range ps {
		members[p.Spec.Member] = true
		if p.Status.Phase != PhaseSucceeded || p.Spec.Share.Count != 3 {
			t.Errorf("part %s: phase %s share %+v", p.Name, p.Status.Phase, p.Spec.Share)
		}
		if !p.Spec.StartAt.Equal(ps[0].Spec.StartAt) || p.Spec.StartAt.IsZero() {
			t.Errorf("part %s starts at %s, part %s at %s", p.Name, p.Spec.StartAt, ps[0].Name, ps[0].Spec.StartAt)
		}
		if p.Status.StartTime.Before(p.Spec.StartAt) {
			t.Errorf("part %s started at %s, before the common start %s", p.Name, p.Status.StartTime, p.Spec.StartAt)
		}
		r, err := decodePartResult(p.Status.Result)
		if err != nil {
			t.Fatal(err)
		}
		if r.Total.Count != 20 {
			t.Errorf("part %s fired %d shots, want a third of 60", p.Name, r.Total.Count)
		}
		sum += r.Total.Count
		union.Merge(r.Total.Latency)
		unionService.Merge(r.Total.Service)
	}
	if len(members) != 3 {
		t.Errorf("parts ran on %d members: %v", len(members), members)
	}
	res := lt.Status.Results
	if res.Requests != sum || sum != 60 || srv.requests.Load() != 60 {
		t.Fatalf("merged %d requests, parts %d, server %d; want 60", res.Requests, sum, srv.requests.Load())
	}
	merged, err := aggregate.DecodeHistogram(res.Histograms.Latency)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []float64{0, 10, 50, 90, 99, 99.9, 100} {
		if a, b := merged.Quantile(q), union.Quantile(q); a != b {
			t.Errorf("p%v: merged %s, union %s", q, a, b)
		}
	}
	if merged.Count() != union.Count() || merged.Max() != union.Max() || merged.Mean() != union.Mean() {
		t.Errorf("merged %d/%s/%s, union %d/%s/%s", merged.Count(), merged.Max(), merged.Mean(), union.Count(), union.Max(), union.Mean())
	}
	if res.Latency != quantiles(union) || res.ServiceTime != quantiles(unionService) {
		t.Errorf("quantiles %+v %+v, union %+v %+v", res.Latency, res.ServiceTime, quantiles(union), quantiles(unionService))
	}
	if len(lt.Status.Parts) != 3 {
		t.Errorf("status parts %+v", lt.Status.Parts)
	}
	for _, ref := range lt.Status.Parts {
		if ref.Phase != PhaseSucceeded || !members[ref.Member] {
			t.Errorf("status part %+v", ref)
		}
	}
	if c := condition(t, lt, ConditionComplete); c.Status != meta.ConditionTrue || c.Reason != ReasonPassed {
		t.Errorf("Complete %+v", c)
	}
}

// TestAutostopInOnePartStopsAll lets an autostop rule fire in a parallel
// run: the test stops everywhere and fails, saying which rule fired.
func TestAutostopInOnePartStopsAll(t *testing.T) {
	srv := newTarget(t)
	srv.status.Store(http.StatusInternalServerError)
	st := newStore(t)
	startReplica(t, st, Options{})
	startReplica(t, st, Options{})
	s := spec(srv.URL, 20, time.Minute)
	s.Parallelism = 2
	s.Thresholds = []string{"error_rate > 50% for 1s"}
	create(t, st, "stops", s)
	lt := waitFor(t, st, "stops", "to end", func(lt *LoadTest) bool { return lt.Status.Phase.Final() })
	if lt.Status.Phase != PhaseFailed || lt.Status.Reason != ReasonAutostopped {
		t.Fatalf("want Failed/Autostopped: %s", describe(lt))
	}
	v := lt.Status.Verdict
	if v == nil || v.Passed || len(v.Failures) == 0 || !strings.Contains(v.Failures[0], "stopped: \"error_rate > 50% for 1s\"") || !strings.Contains(v.Failures[0], "(part ") {
		t.Fatalf("verdict %+v", v)
	}
	if lt.Status.Results.Stop != "autostop" {
		t.Errorf("stop %q", lt.Status.Results.Stop)
	}
	for _, p := range parts(t, st) {
		if !p.Status.Phase.Final() || (p.Status.Stop != "autostop" && p.Status.Phase != PhaseCancelled) {
			t.Errorf("part %s: %s stop %q", p.Name, p.Status.Phase, p.Status.Stop)
		}
	}
	sent := srv.requests.Load()
	time.Sleep(200 * time.Millisecond)
	if n := srv.requests.Load(); n != sent || n > 20*30 {
		t.Errorf("%d shots (%d after the end)", n, n-sent)
	}
}

// TestReplicasRunEachTestOnce starts tests of one part on three replicas
// that all coordinate: each test runs exactly once, on one member.
func TestReplicasRunEachTestOnce(t *testing.T) {
	srv := newTarget(t)
	st := newStore(t)
	for range 3 {
		startReplica(t, st, Options{})
	}
	names := []string{"one", "two", "three"}
	for _, name := range names {
		create(t, st, name, spec(srv.URL, 10, 500*time.Millisecond))
	}
	for _, name := range names {
		lt := waitFor(t, st, name, "to end", func(lt *LoadTest) bool { return lt.Status.Phase.Final() })
		if lt.Status.Phase != PhaseSucceeded || lt.Status.Results.Requests != 5 || len(lt.Status.Parts) != 1 {
			t.Errorf("%s: %s, %+v", name, describe(lt), lt.Status.Results)
		}
	}
	if n := srv.requests.Load(); n != 15 {
		t.Errorf("the server saw %d requests, want 3 tests × 5", n)
	}
	if ps := parts(t, st); len(ps) != 3 {
		t.Errorf("%d parts, want 3", len(ps))
	}
}
