package main

import (
	"context"
	"time"

	"github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/controller/builder"
	"github.com/capstanhq/capstan/pkg/coordination"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"

	"github.com/capstanhq/capstan/test/e2e/api"
)

// setupElector makes the manager leader-elected with a coordination
// Elector whose identity is the replica name plus a random suffix.
func (op *operator) setupElector(mopts *manager.Options) error {
	op.identity = op.cfg.replica + "-" + randomID(3)
	el, err := coordination.NewElector(coordination.ElectorConfig{
		Store:            op.st,
		Lease:            meta.Key{Namespace: api.Namespace, Name: api.LeaderLease},
		Identity:         op.identity,
		LeaseDuration:    op.cfg.lease,
		RenewDeadline:    op.cfg.renewDeadline,
		RetryPeriod:      op.cfg.retry,
		ReleaseOnCancel:  true,
		OnStartedLeading: op.startedLeading,
		Logger:           op.log.WithName("elector"),
	})
	if err != nil {
		return err
	}
	op.elector = el
	mopts.LeaderElection = true
	mopts.LeaderElector = el
	return nil
}

// startedLeading records the leadership as a Term named after its token.
func (op *operator) startedLeading(ctx context.Context) {
	token := op.elector.Token()
	op.log.Info("leading", "identity", op.identity, "token", token)
	if token == 0 {
		return // already lost
	}
	term := &api.Term{
		ObjectMeta: meta.ObjectMeta{Namespace: api.Namespace, Name: api.TermName(token)},
		Spec:       api.TermSpec{Identity: op.identity, Replica: op.cfg.replica, Token: token, StartNanos: time.Now().UnixNano()},
	}
	for ctx.Err() == nil {
		err := op.st.Create(ctx, term)
		switch {
		case err == nil:
			return
		case errs.IsAlreadyExists(err):
			// Another leader with the same token: the checker reports it,
			// since the stored Term names someone else.
			op.log.Info("term already recorded", "token", token)
			return
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return
		}
	}
}

// setupJobs adds the leader-elected Job controller.
func (op *operator) setupJobs() error {
	return builder.ControllerManagedBy(op.mgr).
		For(&api.Job{}).
		Named("jobs").
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).
		Complete(controller.Func(op.reconcileJob))
}

// reconcileJob marks a Job done with the leader's identity and token, in
// a write fenced with the leadership's token.
func (op *operator) reconcileJob(ctx context.Context, req controller.Request) (controller.Result, error) {
	job := &api.Job{}
	if err := op.st.Get(ctx, req, job); err != nil {
		if errs.IsNotFound(err) {
			return controller.Result{}, nil
		}
		return controller.Result{}, err
	}
	if job.Status.Done {
		return controller.Result{}, nil
	}
	token := op.elector.Token()
	if token == 0 {
		// Not (or no longer surely) leading: the next leader does it.
		return controller.Result{RequeueAfter: op.cfg.retry}, nil
	}
	if !sleep(ctx, op.cfg.jobWork) {
		return controller.Result{}, nil
	}
	f := store.Fence{Name: op.elector.FenceName(), Token: token}
	job.Status.Done, job.Status.DoneBy, job.Status.Replica = true, op.identity, op.cfg.replica
	job.Status.Token, job.Status.DoneNanos = token, time.Now().UnixNano()
	err := fencedWrite(ctx, job, f, op.st.UpdateStatus)
	if errs.IsConflict(err) {
		cur := &api.Job{}
		if gerr := op.st.Get(ctx, req, cur); gerr == nil {
			if refused, _ := refusedBy(cur, f); refused {
				op.refused(ctx, f, cur, op.currentMember(), err)
				return controller.Result{}, nil
			}
		}
	}
	return controller.Result{}, err
}
