package coordination_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/coordination"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/memory"
)

const wait = 30 * time.Second

// replica is a manager whose leader-elected runnable counts how often it
// runs.
type replica struct {
	id      string
	e       *coordination.Elector
	m       *manager.Manager
	running atomic.Int32
	ctxs    chan context.Context
	cancel  context.CancelFunc
	result  chan error
}

func startReplica(t *testing.T, st store.Store, lease meta.Key, id string) *replica {
	t.Helper()
	e, err := coordination.NewElector(coordination.ElectorConfig{Store: st, Lease: lease, Identity: id,
		LeaseDuration: 600 * time.Millisecond, RenewDeadline: 400 * time.Millisecond, RetryPeriod: 100 * time.Millisecond,
		ReleaseOnCancel: true})
	if err != nil {
		t.Fatal(err)
	}
	m, err := manager.New(manager.Options{Store: st, LeaderElection: true, LeaderElector: e, GracefulShutdownTimeout: wait})
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{id: id, e: e, m: m, ctxs: make(chan context.Context, 4), result: make(chan error, 1)}
	if err := m.Add(manager.RunnableFunc(func(ctx context.Context) error {
		r.running.Add(1)
		defer r.running.Add(-1)
		r.ctxs <- ctx
		<-ctx.Done()
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.result <- m.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.result:
		case <-time.After(wait):
			t.Errorf("manager %s did not stop", id)
		}
	})
	return r
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func recvErr(t *testing.T, ch chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		ch <- err // for the cleanup
		return err
	case <-time.After(wait):
		t.Fatalf("timed out waiting for %s", what)
		return nil
	}
}

// The Elector drives pkg/manager's leader election: leader-elected
// runnables run only on the leader, move to the other replica when the
// leader stops, and a lost lease stops the manager with an error.
func TestElectorDrivesManager(t *testing.T) {
	s := store.NewScheme()
	if err := coordination.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	st := memory.New(s)
	defer st.Close(context.Background())
	lease := meta.Key{Namespace: "default", Name: "operator"}

	r1 := startReplica(t, st, lease, "r1")
	eventually(t, "r1 runs its leader-elected runnable", func() bool { return r1.running.Load() == 1 })
	r2 := startReplica(t, st, lease, "r2")
	eventually(t, "r2 sees r1 lead", func() bool { return r2.e.Leader() == "r1" })
	if r2.running.Load() != 0 {
		t.Fatal("a follower runs leader-elected work")
	}

	r1.cancel()
	if err := recvErr(t, r1.result, "r1 to stop"); err != nil {
		t.Fatalf("r1.Start = %v", err)
	}
	if r1.running.Load() != 0 {
		t.Fatal("r1's runnable outlived its manager")
	}
	eventually(t, "r2 takes over", func() bool { return r2.running.Load() == 1 })
	ctx := <-r2.ctxs

	// Another process overwrites the lease: r2's manager stops with an
	// error and its leader-elected runnable is stopped.
	l := &coordination.Lease{}
	if err := st.Get(context.Background(), lease, l); err != nil {
		t.Fatal(err)
	}
	l.Spec.HolderIdentity, l.Spec.LeaseTransitions = "intruder", l.Spec.LeaseTransitions+10
	if err := st.Update(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	err := recvErr(t, r2.result, "r2 to fail")
	if err == nil || !errs.IsAborted(err) {
		t.Fatalf("r2.Start = %v, want an Aborted error", err)
	}
	if ctx.Err() == nil || r2.running.Load() != 0 {
		t.Fatal("the leader-elected runnable still runs after the lease was lost")
	}
}

// The manager's default leader election registers coordination metrics on
// the manager's registry; Metrics for a Membership and Locks made on the
// same registry share them instead of panicking, so leader, member and
// lock metrics are all served there.
func TestManagerCoordinationMetrics(t *testing.T) {
	s := store.NewScheme()
	if err := coordination.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	st := memory.New(s)
	defer st.Close(context.Background())
	m, err := manager.New(manager.Options{Store: st, LeaderElection: true, LeaderElectionID: "metered", Namespace: "default",
		LeaseDuration: 600 * time.Millisecond, RenewDeadline: 400 * time.Millisecond, RetryPeriod: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := coordination.NewMembership(coordination.MembershipConfig{Store: st, Namespace: "default", Group: "metered",
		Metrics: coordination.NewMetrics(m.Registry())})
	if err != nil {
		t.Fatal(err)
	}
	locks, err := coordination.NewLocks(coordination.LocksConfig{Store: st, Membership: ms, Metrics: coordination.NewMetrics(m.Registry())})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []manager.Runnable{ms, locks} {
		if err := m.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() { result <- m.Start(ctx) }()
	defer func() {
		cancel()
		if err := recvErr(t, result, "the manager to stop"); err != nil {
			t.Errorf("Start = %v", err)
		}
	}()
	h, err := locks.Acquire(ctx, "metered")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	have := func() map[string]bool {
		mfs, err := m.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, mf := range mfs {
			out[mf.GetName()] = len(mf.GetMetric()) > 0
		}
		return out
	}
	eventually(t, "leader, lock and member metrics on the manager's registry", func() bool {
		got := have()
		return got["capstan_leader_is_leader"] && got["capstan_lease_transitions_total"] && got["capstan_lock_wait_seconds"] &&
			got["capstan_lock_hold_seconds"] && got["capstan_members_live"]
	})
}
