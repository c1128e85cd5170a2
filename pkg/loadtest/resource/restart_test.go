package resource

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/controller/controllerutil"
	"github.com/capstanhq/capstan/pkg/coordination"
	"github.com/capstanhq/capstan/pkg/loadtest/schedule"
	"github.com/capstanhq/capstan/pkg/meta"
)

// TestStopInterruptsTheRun stops the only process while its test runs: the
// runner reports the part interrupted with the results so far, and the
// process that starts next ends the test Failed/Interrupted instead of
// leaving it running.
func TestStopInterruptsTheRun(t *testing.T) {
	srv := newTarget(t)
	st := newStore(t)
	first := startReplica(t, st, Options{})
	create(t, st, "cut", spec(srv.URL, 20, time.Minute))
	waitFor(t, st, "cut", "to make progress", func(lt *LoadTest) bool {
		return lt.Status.Progress != nil && lt.Status.Progress.Requests >= 5
	})
	first.stop()
	sent := srv.requests.Load()
	ps := parts(t, st)
	if len(ps) != 1 || ps[0].Status.Phase != PhaseFailed || ps[0].Status.Reason != ReasonInterrupted || len(ps[0].Status.Result) == 0 {
		t.Fatalf("after the stop the part is %+v", ps)
	}
	if lt := get(t, st, "cut"); lt.Status.Phase != PhaseRunning {
		t.Fatalf("with no process left the test is %s", describe(lt))
	}

	startReplica(t, st, Options{})
	lt := waitFor(t, st, "cut", "to end", func(lt *LoadTest) bool { return lt.Status.Phase.Final() })
	if lt.Status.Phase != PhaseFailed || lt.Status.Reason != ReasonInterrupted || !strings.Contains(lt.Status.Message, "stopping") {
		t.Fatalf("want Failed/Interrupted: %s", describe(lt))
	}
	if r := lt.Status.Results; r == nil || r.Requests < 5 || r.Requests > sent {
		t.Errorf("partial results %+v (the server saw %d)", r, sent)
	}
	if n := srv.requests.Load(); n != sent {
		t.Errorf("the new process fired %d more shots", n-sent)
	}
}

// TestCrashedRunnerIsInterrupted sets up what a crash leaves behind: a
// running test whose part belongs to a member that no longer renews. The
// process that starts reaps that member once its lease expired, and the
// test ends Failed/Interrupted; nothing is fired again.
func TestCrashedRunnerIsInterrupted(t *testing.T) {
	srv := newTarget(t)
	st := newStore(t)
	ctx := context.Background()
	dead := &coordination.Member{
		ObjectMeta: meta.ObjectMeta{Namespace: ns, Name: DefaultMembershipGroup + "-0123456789"},
		Spec:       coordination.MemberSpec{Group: DefaultMembershipGroup, LeaseDurationMillis: 500, RenewTime: meta.Now()},
	}
	if err := st.Create(ctx, dead); err != nil {
		t.Fatal(err)
	}
	s := spec(srv.URL, 20, time.Minute)
	lt := create(t, st, "orphan", s)
	controllerutil.AddFinalizer(lt, Finalizer)
	if err := st.Update(ctx, lt); err != nil {
		t.Fatal(err)
	}
	lt.Status = LoadTestStatus{ObservedGeneration: 1, RunGeneration: 1, Phase: PhaseRunning, Reason: ReasonRunning, StartTime: meta.Now(),
		Parts: []PartRef{{Index: 0, Name: "orphan-0", Member: dead.Name, Phase: PhaseRunning}}}
	if err := st.UpdateStatus(ctx, lt); err != nil {
		t.Fatal(err)
	}
	part := &LoadTestPart{
		ObjectMeta: meta.ObjectMeta{Namespace: ns, Name: "orphan-0"},
		Spec:       LoadTestPartSpec{LoadTest: "orphan", Member: dead.Name, Share: schedule.Share{Count: 1}, Test: s.Spec},
	}
	if err := controllerutil.SetControllerReference(lt, part, st.Scheme()); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(ctx, part); err != nil {
		t.Fatal(err)
	}
	part.Status = LoadTestPartStatus{Phase: PhaseRunning, StartTime: meta.Now()}
	if err := st.UpdateStatus(ctx, part); err != nil {
		t.Fatal(err)
	}

	startReplica(t, st, Options{})
	lt = waitFor(t, st, "orphan", "to end and let go", func(lt *LoadTest) bool { return lt.Status.Phase.Final() && len(lt.Finalizers) == 0 })
	if lt.Status.Phase != PhaseFailed || lt.Status.Reason != ReasonInterrupted || !strings.Contains(lt.Status.Message, dead.Name+" is gone") {
		t.Fatalf("want Failed/Interrupted naming the member: %s", describe(lt))
	}
	if n := srv.requests.Load(); n != 0 {
		t.Errorf("%d shots fired for a part of a dead member", n)
	}
}
