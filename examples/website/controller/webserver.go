package controller

import (
	"context"
	"time"

	ctrl "github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/controller/builder"
	"github.com/capstanhq/capstan/pkg/controller/predicate"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"

	"github.com/capstanhq/capstan/examples/website/api"
)

// WebServerReconciler "starts" WebServers: each new generation is Starting
// for StartupDelay, then Ready. A real operator would start a process or
// call an API here and report what it observes.
type WebServerReconciler struct {
	// StartupDelay is how long a generation takes to start; 0 is at once.
	StartupDelay time.Duration
	// Options are the controller's options.
	Options ctrl.Options

	store store.Store
}

// SetupWithManager adds a controller named "webserver" to mgr. It sees
// only spec changes (predicate.GenerationChanged): its own status writes
// do not wake it, RequeueAfter does.
func (r *WebServerReconciler) SetupWithManager(mgr *manager.Manager) error {
	r.store = mgr.Store()
	return builder.ControllerManagedBy(mgr).
		For(&api.WebServer{}, builder.WithPredicates(predicate.GenerationChanged())).
		WithOptions(r.Options).
		Complete(ctrl.ObjectFunc(mgr.Cache(), r.Reconcile))
}

// Reconcile moves one WebServer, read from the cache, toward serving its
// current generation.
func (r *WebServerReconciler) Reconcile(ctx context.Context, ws *api.WebServer) (ctrl.Result, error) {
	res, err := r.reconcile(ctx, ws)
	if errs.IsConflict(err) {
		// A stale cached copy: try again once the cache caught up.
		ctrl.LoggerFrom(ctx).V(1).Info("stale object; requeuing", "reason", err.Error())
		return ctrl.Result{Requeue: true}, nil
	}
	return res, err
}

func (r *WebServerReconciler) reconcile(ctx context.Context, ws *api.WebServer) (ctrl.Result, error) {
	if ws.IsBeingDeleted() || ws.IsServing() {
		return ctrl.Result{}, nil
	}
	gen := ws.Generation
	if r.StartupDelay > 0 {
		c := meta.FindCondition(ws.Status.Conditions, api.ConditionReady)
		if c == nil || c.Reason != api.ReasonStarting || c.ObservedGeneration != gen {
			// A new generation (re)starts the server now.
			meta.RemoveCondition(&ws.Status.Conditions, api.ConditionReady)
			meta.SetCondition(&ws.Status.Conditions, meta.Condition{
				Type: api.ConditionReady, Status: meta.ConditionFalse, ObservedGeneration: gen,
				Reason: api.ReasonStarting, Message: "starting " + ws.Spec.Domain,
			})
			ws.Status.ObservedGeneration = gen
			if err := r.store.UpdateStatus(ctx, ws); err != nil {
				return ctrl.Result{}, err
			}
			return ctrl.Result{RequeueAfter: r.StartupDelay}, nil
		}
		// The condition was written by this controller, so its time is
		// from our own clock's point of view.
		if left := r.StartupDelay - time.Since(c.LastTransitionTime); left > 0 {
			return ctrl.Result{RequeueAfter: left}, nil
		}
	}
	meta.SetCondition(&ws.Status.Conditions, meta.Condition{
		Type: api.ConditionReady, Status: meta.ConditionTrue, ObservedGeneration: gen,
		Reason: api.ReasonServing, Message: "serving " + ws.Spec.Domain,
	})
	ws.Status.ObservedGeneration = gen
	return ctrl.Result{}, r.store.UpdateStatus(ctx, ws)
}
