package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/controller/builder"
	"github.com/capstanhq/capstan/pkg/coordination"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"

	"github.com/capstanhq/capstan/test/e2e/api"
)

// setupItems adds the Sharder and the sharded Item controller, which runs
// on every replica and reconciles only the keys of the shards it holds.
func (op *operator) setupItems() error {
	sh, err := coordination.NewSharder(coordination.ShardingConfig{
		Store: op.st, Membership: op.membership, Name: api.ShardedController,
		Shards: op.cfg.shards, LeaseDuration: op.cfg.shardLease,
		Logger: op.log.WithName("sharder"),
	})
	if err != nil {
		return err
	}
	op.sharder = sh
	if err := op.mgr.Add(sh); err != nil {
		return err
	}
	op.records = newRecordLog(op.st, op.cfg.replica, op.log.WithName("records"))
	if err := op.mgr.Add(runnable(op.records.run(op.cfg.logFlush))); err != nil {
		return err
	}
	no := false
	c, err := builder.ControllerManagedBy(op.mgr).
		For(&api.Item{}).
		Named("items").
		WithOptions(controller.Options{MaxConcurrentReconciles: op.cfg.workers, NeedLeaderElection: &no}).
		Build(sh.Wrap(controller.Func(op.reconcileItem)))
	if err != nil {
		return err
	}
	sh.Bind(c, func() []meta.Key {
		res, err := op.mgr.Cache().List(context.Background(), api.KindItem, store.ListOptions{Namespace: api.Namespace})
		if err != nil {
			return nil
		}
		keys := make([]meta.Key, 0, len(res.Items))
		for _, o := range res.Items {
			keys = append(keys, meta.KeyOf(o))
		}
		return keys
	})
	return nil
}

// reconcileItem copies spec.value into the status with a write fenced by
// the shard's lease, and records the reconcile.
func (op *operator) reconcileItem(ctx context.Context, req controller.Request) (controller.Result, error) {
	rec := api.ReconcileRecord{
		Key:        req.String(),
		Shard:      coordination.ShardOf(req, op.cfg.shards),
		Member:     op.currentMember(),
		Process:    op.records.process(),
		StartNanos: time.Now().UnixNano(),
	}
	f := fenceOf(coordination.FenceFrom(ctx))
	if f == nil {
		return controller.Result{}, errs.New(errs.Internal, "no shard fence in the reconcile's context")
	}
	rec.Token = f.Token
	done := func(outcome string) {
		rec.Outcome, rec.EndNanos = outcome, time.Now().UnixNano()
		op.records.add(rec)
	}
	item := &api.Item{}
	if err := op.st.Get(ctx, req, item); err != nil {
		if errs.IsNotFound(err) {
			return controller.Result{}, nil
		}
		done(api.OutcomeError)
		return controller.Result{}, err
	}
	rec.Value = item.Spec.Value
	if item.Status.ObservedGeneration == item.Generation && item.Status.ObservedValue == item.Spec.Value &&
		item.Status.Token == f.Token && item.Status.Fences[f.Name] == f.Token {
		return controller.Result{}, nil // up to date, written under this lease already
	}
	if !sleep(ctx, op.cfg.reconcileWork) {
		done(api.OutcomeAborted)
		return controller.Result{}, nil
	}
	item.Status.ObservedValue, item.Status.ObservedGeneration = item.Spec.Value, item.Generation
	item.Status.Replica, item.Status.Member, item.Status.Token = op.cfg.replica, rec.Member, f.Token
	err := fencedWrite(ctx, item, *f, op.st.UpdateStatus)
	switch {
	case err == nil:
		rec.ResourceVersion = item.ResourceVersion
		done(api.OutcomeWritten)
		return controller.Result{}, nil
	case errs.IsConflict(err):
		cur := &api.Item{}
		if gerr := op.st.Get(ctx, req, cur); gerr == nil {
			if refused, _ := refusedBy(cur, *f); refused {
				done(api.OutcomeRefused)
				op.refused(ctx, *f, cur, rec.Member, err)
				return controller.Result{}, nil
			}
		}
		done(api.OutcomeConflict)
		return controller.Result{Requeue: true}, nil
	default:
		done(api.OutcomeError)
		return controller.Result{}, err
	}
}

// recordLog batches reconcile records into ReconcileLog objects.
type recordLog struct {
	st      store.Store
	replica string
	session string
	log     logr.Logger

	mu      sync.Mutex
	pending []api.ReconcileRecord

	writeMu sync.Mutex
	seq     int
	unsent  *api.ReconcileLog // a batch whose write failed
}

func newRecordLog(st store.Store, replica string, log logr.Logger) *recordLog {
	return &recordLog{st: st, replica: replica, session: randomID(4), log: log}
}

// process names this operator process in the records.
func (l *recordLog) process() string { return l.replica + "/" + l.session }

func (l *recordLog) add(r api.ReconcileRecord) {
	l.mu.Lock()
	l.pending = append(l.pending, r)
	l.mu.Unlock()
}

// run flushes every interval until ctx ends; the operator flushes the rest
// after the manager stopped.
func (l *recordLog) run(interval time.Duration) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				l.flush(ctx)
			}
		}
	}
}

// flush writes the pending records as one ReconcileLog. A batch whose
// write failed is written again, under the same name, before anything
// else, so that a write that reached the store but whose answer was lost
// is not stored twice.
func (l *recordLog) flush(ctx context.Context) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	for {
		if l.unsent == nil {
			l.mu.Lock()
			batch := l.pending
			l.pending = nil
			l.mu.Unlock()
			if len(batch) == 0 {
				return
			}
			l.unsent = &api.ReconcileLog{
				ObjectMeta: meta.ObjectMeta{Namespace: api.Namespace, Name: fmt.Sprintf("%s-%s-%06d", l.replica, l.session, l.seq)},
				Spec:       api.ReconcileLogSpec{Replica: l.replica, Records: batch},
			}
			l.seq++
		}
		err := l.st.Create(ctx, l.unsent)
		if err != nil && !errs.IsAlreadyExists(err) {
			l.log.Info("could not write reconcile records; keeping them", "records", len(l.unsent.Spec.Records), "error", err.Error())
			return
		}
		l.unsent = nil
	}
}
