package main

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/capstanhq/capstan/pkg/coordination"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"

	"github.com/capstanhq/capstan/test/e2e/api"
)

// operator is one replica: a manager with a Membership, a Report writer
// and the runnables of its modes.
type operator struct {
	cfg        config
	st         store.Store
	log        logr.Logger
	mgr        *manager.Manager
	membership *coordination.Membership

	elector   *coordination.Elector // leader mode
	identity  string
	lockToken atomic.Int64          // lock mode: token held, 0 if none
	sharder   *coordination.Sharder // shard mode
	records   *recordLog            // shard mode

	refusals atomic.Int64

	mu      sync.Mutex
	members []string // every Member this process registered
}

// runnable adapts a function to manager.Runnable, running on every replica.
type runnable func(ctx context.Context) error

// Start implements manager.Runnable; NeedLeaderElection says it runs on
// every replica.
func (r runnable) Start(ctx context.Context) error { return r(ctx) }
func (r runnable) NeedLeaderElection() bool        { return false }

func newOperator(cfg config, st store.Store, log logr.Logger) (*operator, error) {
	op := &operator{cfg: cfg, st: st, log: log}
	var err error
	op.membership, err = coordination.NewMembership(coordination.MembershipConfig{
		Store: st, Namespace: api.Namespace, Group: api.MemberGroup,
		LeaseDuration: cfg.memberLease, RenewInterval: cfg.memberRenew,
		Logger: log.WithName("membership"),
	})
	if err != nil {
		return nil, err
	}
	mopts := manager.Options{
		Store:                   st,
		Namespace:               api.Namespace,
		Logger:                  log,
		MetricsBindAddress:      "0",
		HealthProbeBindAddress:  cfg.healthAddr,
		GracefulShutdownTimeout: 15 * time.Second,
	}
	if cfg.modes["leader"] {
		if err := op.setupElector(&mopts); err != nil {
			return nil, err
		}
	}
	op.mgr, err = manager.New(mopts)
	if err != nil {
		return nil, err
	}
	for _, r := range []manager.Runnable{op.membership, runnable(op.announce), runnable(op.report)} {
		if err := op.mgr.Add(r); err != nil {
			return nil, err
		}
	}
	if cfg.modes["leader"] {
		if err := op.setupJobs(); err != nil {
			return nil, err
		}
	}
	if cfg.modes["lock"] {
		if err := op.setupLockLoop(); err != nil {
			return nil, err
		}
	}
	if cfg.modes["shard"] {
		if err := op.setupItems(); err != nil {
			return nil, err
		}
	}
	return op, nil
}

// finish runs after the manager stopped: it writes the last reconcile
// records.
func (op *operator) finish() {
	if op.records != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		op.records.flush(ctx)
	}
}

// announce prints the ready line once this process has registered.
func (op *operator) announce(ctx context.Context) error {
	select {
	case <-op.membership.Ready():
	case <-ctx.Done():
		return nil
	}
	s, err := op.membership.WaitSession(ctx)
	if err != nil {
		return nil
	}
	op.noteMember(s.Name)
	fmt.Fprintf(os.Stdout, "%s replica=%s member=%s pid=%d\n", ReadyLine, op.cfg.replica, s.Name, os.Getpid())
	return nil
}

func (op *operator) noteMember(name string) {
	op.mu.Lock()
	defer op.mu.Unlock()
	if n := len(op.members); n == 0 || op.members[n-1] != name {
		op.members = append(op.members, name)
	}
}

// currentMember returns the current Member name ("" if none).
func (op *operator) currentMember() string {
	if s := op.membership.Session(); s != nil {
		op.noteMember(s.Name)
		return s.Name
	}
	return ""
}

// report writes this replica's Report whenever its Member, leadership or
// shards change, and at least every reportInterval (with the lock token
// and refusal count of the moment), until ctx ends. Writing rarely keeps
// the store's write load low.
func (op *operator) report(ctx context.Context) error {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var last api.ReportStatus
	var lastWrite time.Time
	for {
		st := op.status()
		if !sameReport(st, last) || time.Since(lastWrite) >= op.cfg.reportInterval {
			if op.writeReport(ctx, st) {
				last, lastWrite = st, time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// status is what this replica believes now.
func (op *operator) status() api.ReportStatus {
	st := api.ReportStatus{
		Replica:   op.cfg.replica,
		PID:       os.Getpid(),
		Member:    op.currentMember(),
		Identity:  op.identity,
		LockToken: op.lockToken.Load(),
		Refusals:  op.refusals.Load(),
		FenceMode: fenceMode(),
	}
	op.mu.Lock()
	st.Members = append([]string(nil), op.members...)
	op.mu.Unlock()
	if op.elector != nil {
		st.LeaderToken = op.elector.Token()
		st.Leading = st.LeaderToken != 0
	}
	if op.sharder != nil {
		st.Shards = op.sharder.Held()
	}
	return st
}

// sameReport compares two views, ignoring when they were written and what
// changes too often to be written each time (the lock token changes with
// every critical section).
func sameReport(a, b api.ReportStatus) bool {
	a.UpdatedNanos, b.UpdatedNanos = 0, 0
	a.LockToken, b.LockToken = 0, 0
	a.Refusals, b.Refusals = 0, 0
	return reflect.DeepEqual(a, b)
}

// writeReport writes st as this replica's Report; it reports success.
func (op *operator) writeReport(ctx context.Context, st api.ReportStatus) bool {
	st.UpdatedNanos = time.Now().UnixNano()
	rep := &api.Report{ObjectMeta: meta.ObjectMeta{Namespace: api.Namespace, Name: op.cfg.replica}, Status: st}
	err := op.st.UpdateStatus(ctx, rep) // no resourceVersion: unconditional
	if errs.IsNotFound(err) {
		err = op.st.Create(ctx, rep)
	}
	if err != nil && ctx.Err() == nil {
		op.log.V(1).Info("could not write the report", "error", err.Error())
	}
	return err == nil
}

// refused records a fenced write the store refused.
func (op *operator) refused(ctx context.Context, f store.Fence, obj meta.Object, member string, cause error) {
	n := op.refusals.Add(1)
	kind, _ := op.st.Scheme().KindOf(obj)
	kindName := ""
	if kind != nil {
		kindName = kind.Name
	}
	op.log.Info("fenced write refused", "fence", f.Name, "token", f.Token, "object", meta.KeyOf(obj).String(), "error", cause.Error())
	r := &api.Refusal{
		ObjectMeta: meta.ObjectMeta{Namespace: api.Namespace, Name: fmt.Sprintf("%s-%s-%d", op.cfg.replica, randomID(4), n)},
		Spec: api.RefusalSpec{Replica: op.cfg.replica, Member: member, Fence: f.Name, Token: f.Token,
			Object: kindName + "/" + meta.KeyOf(obj).String(), Error: cause.Error(), AtNanos: time.Now().UnixNano()},
	}
	// The record must survive: retry while the store is unreachable.
	for ctx.Err() == nil {
		err := op.st.Create(ctx, r)
		if err == nil || errs.IsAlreadyExists(err) {
			return
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return
		}
	}
}
