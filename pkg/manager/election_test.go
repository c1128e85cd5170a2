package manager_test

import (
	"context"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/memory"
)

// TestLeaderElectionJustWorks checks that LeaderElection: true with a
// LeaderElectionID builds an elector on the store: one of two managers
// leads, and when it stops (releasing the lease) the other takes over.
func TestLeaderElectionJustWorks(t *testing.T) {
	st := memory.New(store.NewScheme())
	newMgr := func() *manager.Manager {
		m, err := manager.New(manager.Options{
			Store: st, LeaderElection: true, LeaderElectionID: "ops-leader",
			LeaseDuration: 900 * time.Millisecond, RenewDeadline: 600 * time.Millisecond, RetryPeriod: 100 * time.Millisecond,
			LeaderElectionReleaseOnCancel: true, GracefulShutdownTimeout: 10 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	a, b := newMgr(), newMgr()
	ctxA, stopA := context.WithCancel(context.Background())
	ctxB, stopB := context.WithCancel(context.Background())
	defer stopB()
	doneA, doneB := make(chan error, 1), make(chan error, 1)
	go func() { doneA <- a.Start(ctxA) }()
	go func() { doneB <- b.Start(ctxB) }()

	var leader, follower *manager.Manager
	var stopLeader context.CancelFunc
	var leaderDone chan error
	select {
	case <-a.Elected():
		leader, follower, stopLeader, leaderDone = a, b, stopA, doneA
	case <-b.Elected():
		leader, follower, stopLeader, leaderDone = b, a, stopB, doneB
	case <-time.After(30 * time.Second):
		t.Fatal("nobody was elected")
	}
	_ = leader
	select {
	case <-follower.Elected():
		t.Fatal("both managers elected")
	case <-time.After(1500 * time.Millisecond):
	}
	stopLeader()
	if err := <-leaderDone; err != nil {
		t.Fatalf("leader's Start: %v", err)
	}
	select {
	case <-follower.Elected():
	case <-time.After(30 * time.Second):
		t.Fatal("the follower never took over")
	}
	stopA()
	stopB()
}

func TestLeaderElectionNeedsAnID(t *testing.T) {
	_, err := manager.New(manager.Options{Store: memory.New(store.NewScheme()), LeaderElection: true})
	if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != "leaderElectionID" {
		t.Fatalf("err = %v, want InvalidArgument on leaderElectionID", err)
	}
}
