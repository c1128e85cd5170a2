package controller

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"time"

	ctrl "github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/controller/builder"
	"github.com/capstanhq/capstan/pkg/controller/controllerutil"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
	"github.com/capstanhq/capstan/pkg/store"

	"github.com/capstanhq/capstan/examples/website/api"
	"github.com/capstanhq/capstan/examples/website/dns"
)

// Finalizer is the finalizer the Website controller puts on every Website
// so that it can remove the DNS record before the Website disappears.
const Finalizer = "example.capstan.dev/dns-record"

// WebsiteLabel is the label every WebServer carries with its Website's
// name, for people selecting them (capstan get webservers -l ...). The
// controller itself finds its WebServers by controller reference.
const WebsiteLabel = "example.capstan.dev/website"

// ControllerUIDIndex indexes cached WebServers by the uid of the Website
// that controls them.
const ControllerUIDIndex = "example.capstan.dev/controller-uid"

// DefaultDomainRetry is Options.DomainRetry's default.
const DefaultDomainRetry = 30 * time.Second

// WebsiteReconciler converges a Website: finalizer, DNS record, WebServers
// and status.
type WebsiteReconciler struct {
	// DNS is where domains are registered. Required.
	DNS dns.Registry
	// DomainRetry is how soon a Website whose domain is taken tries again;
	// default DefaultDomainRetry.
	DomainRetry time.Duration
	// Options are the controller's options.
	Options ctrl.Options

	store  store.Store
	cache  *source.Cache
	client client
}

// SetupWithManager indexes WebServers by controller and adds a controller
// named "website" to mgr that reconciles Websites and is woken by changes
// of the WebServers they control.
func (r *WebsiteReconciler) SetupWithManager(mgr *manager.Manager) error {
	if r.DNS == nil {
		return errs.Invalid("DNS", "a DNS registry is required")
	}
	if r.DomainRetry <= 0 {
		r.DomainRetry = DefaultDomainRetry
	}
	r.store, r.cache = mgr.Store(), mgr.Cache()
	r.client = client{Reader: r.cache, Writer: r.store}
	err := r.cache.IndexField(api.WebServerKind, ControllerUIDIndex, func(obj meta.Object) []string {
		if ref := obj.GetObjectMeta().ControllerRef(); ref != nil && ref.Kind == api.WebsiteKind {
			return []string{ref.UID}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return builder.ControllerManagedBy(mgr).
		For(&api.Website{}).
		Owns(&api.WebServer{}).
		WithOptions(r.Options).
		Complete(ctrl.ObjectFunc(r.cache, r.Reconcile))
}

// Reconcile converges one Website, read from the cache.
func (r *WebsiteReconciler) Reconcile(ctx context.Context, site *api.Website) (ctrl.Result, error) {
	res, err := r.reconcile(ctx, site)
	if errs.IsConflict(err) && !ctrl.IsTerminal(err) {
		// The cached copy was older than the store's, which is normal
		// right after our own writes: try again (with backoff) once the
		// cache has caught up, without logging an error.
		ctrl.LoggerFrom(ctx).V(1).Info("stale object; requeuing", "reason", err.Error())
		return ctrl.Result{Requeue: true}, nil
	}
	return res, err
}

func (r *WebsiteReconciler) reconcile(ctx context.Context, site *api.Website) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	if site.IsBeingDeleted() {
		return ctrl.Result{}, r.finalize(ctx, site)
	}
	// The finalizer goes on first: from then on the Website cannot
	// disappear before finalize has removed what we create below.
	if controllerutil.AddFinalizer(site, Finalizer) {
		if err := r.store.Update(ctx, site); err != nil {
			return ctrl.Result{}, err
		}
	}
	status := meta.DeepCopyValue(site.Status)
	status.ObservedGeneration = site.Generation

	if err := site.Spec.Validate(); err != nil {
		// Nothing helps until the spec changes, which enqueues the
		// Website again: report and do not retry.
		msg := err.Error()
		setConditions(&status, site.Generation,
			meta.ConditionFalse, api.ReasonInvalidSpec, msg,
			meta.ConditionFalse, api.ReasonInvalidSpec, msg)
		if err := r.writeStatus(ctx, site, &status); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, ctrl.TerminalError(err)
	}

	domainTaken := false
	if err := r.DNS.Set(ctx, site.Spec.Domain, dnsOwner(site)); err != nil {
		if !errs.IsAlreadyExists(err) {
			return ctrl.Result{}, err
		}
		domainTaken = true
		log.Info("domain is taken; will retry", "domain", site.Spec.Domain, "reason", err.Error())
	}

	children, err := r.syncWebServers(ctx, site)
	if err != nil {
		return ctrl.Result{}, err
	}

	// Status from what the cache shows: it may lag behind the writes
	// above, but every change of a WebServer enqueues its Website again,
	// so the status converges.
	want := site.Spec.Replicas
	status.Replicas, status.UpdatedReplicas, status.ReadyReplicas = 0, 0, 0
	for _, ws := range children {
		status.Replicas++
		if ws.Spec == desiredSpec(site) {
			status.UpdatedReplicas++
			if ws.IsServing() {
				status.ReadyReplicas++
			}
		}
	}
	progress := fmt.Sprintf("%d of %d replicas ready, %d updated", status.ReadyReplicas, want, status.UpdatedReplicas)
	progressing, progressingReason := meta.ConditionFalse, api.ReasonComplete
	if status.ReadyReplicas != want || status.Replicas != want {
		progressing, progressingReason = meta.ConditionTrue, api.ReasonRollingOut
	}
	ready, readyReason, readyMsg := meta.ConditionTrue, api.ReasonAllReplicasReady, progress
	switch {
	case domainTaken:
		ready, readyReason = meta.ConditionFalse, api.ReasonDomainTaken
		readyMsg = fmt.Sprintf("another Website holds domain %s", site.Spec.Domain)
		status.URL = ""
	case progressing == meta.ConditionTrue:
		ready, readyReason = meta.ConditionFalse, api.ReasonReplicasNotReady
	}
	if !domainTaken {
		status.URL = "http://" + site.Spec.Domain + "/"
	}
	setConditions(&status, site.Generation, ready, readyReason, readyMsg, progressing, progressingReason, progress)
	if err := r.writeStatus(ctx, site, &status); err != nil {
		return ctrl.Result{}, err
	}
	if domainTaken {
		return ctrl.Result{RequeueAfter: r.DomainRetry}, nil
	}
	return ctrl.Result{}, nil
}

// syncWebServers creates or updates the WebServers the spec asks for,
// deletes the others this Website controls, and returns the cached
// WebServers that remain.
func (r *WebsiteReconciler) syncWebServers(ctx context.Context, site *api.Website) ([]*api.WebServer, error) {
	log := ctrl.LoggerFrom(ctx)
	scheme := r.store.Scheme()
	wanted := map[string]bool{}
	for i := range int(site.Spec.Replicas) {
		ws := &api.WebServer{ObjectMeta: meta.ObjectMeta{Namespace: site.Namespace, Name: webServerName(site, i)}}
		wanted[ws.Name] = true
		op, err := controllerutil.CreateOrUpdate(ctx, r.client, ws, func() error {
			if err := controllerutil.SetControllerReference(site, ws, scheme); err != nil {
				return err
			}
			if ws.Labels == nil {
				ws.Labels = map[string]string{}
			}
			ws.Labels[WebsiteLabel] = site.Name
			ws.Spec = desiredSpec(site)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("WebServer %s: %w", ws.Name, err)
		}
		if op != controllerutil.OperationResultNone {
			log.Info("WebServer "+string(op), "webserver", ws.Name)
		}
	}

	cached, err := r.cache.ListByIndex(ctx, api.WebServerKind, ControllerUIDIndex, site.UID)
	if err != nil {
		return nil, err
	}
	var keep []*api.WebServer
	for _, obj := range cached {
		ws := obj.(*api.WebServer)
		if wanted[ws.Name] {
			if !ws.IsBeingDeleted() {
				keep = append(keep, ws)
			}
			continue
		}
		// Scaled down. The uid precondition keeps us from deleting a
		// newer WebServer of the same name that the cache has not seen.
		err := r.store.Delete(ctx, ws, store.WithPreconditions(store.Preconditions{UID: ws.UID}))
		switch {
		case err == nil:
			log.Info("WebServer deleted", "webserver", ws.Name)
		case errs.IsNotFound(err), errs.IsConflict(err):
		default:
			return nil, fmt.Errorf("WebServer %s: %w", ws.Name, err)
		}
	}
	return keep, nil
}

// finalize removes the DNS record of a Website being deleted, then its
// finalizer, which lets the store delete it; the garbage collector then
// deletes its WebServers.
func (r *WebsiteReconciler) finalize(ctx context.Context, site *api.Website) error {
	if !site.HasFinalizer(Finalizer) {
		return nil // not ours, or already done
	}
	if err := r.DNS.Remove(ctx, dnsOwner(site)); err != nil {
		return err
	}
	ctrl.LoggerFrom(ctx).Info("removed DNS record; releasing the Website", "domain", site.Spec.Domain)
	controllerutil.RemoveFinalizer(site, Finalizer)
	if err := r.store.Update(ctx, site); err != nil && !errs.IsNotFound(err) {
		return err
	}
	return nil
}

// writeStatus writes status unless it equals what site already has. A
// stale site is errs.Conflict, which requeues the Website.
func (r *WebsiteReconciler) writeStatus(ctx context.Context, site *api.Website, status *api.WebsiteStatus) error {
	if reflect.DeepEqual(&site.Status, status) {
		return nil
	}
	site.Status = *status
	if err := r.store.UpdateStatus(ctx, site); err != nil {
		return err
	}
	ready := meta.FindCondition(status.Conditions, api.ConditionReady)
	ctrl.LoggerFrom(ctx).Info("status updated", "generation", site.Generation,
		"readyReplicas", fmt.Sprintf("%d/%d", status.ReadyReplicas, site.Spec.Replicas),
		"ready", ready.Status, "reason", ready.Reason)
	return nil
}

func setConditions(st *api.WebsiteStatus, gen int64,
	ready meta.ConditionStatus, readyReason, readyMsg string,
	progressing meta.ConditionStatus, progressingReason, progressingMsg string,
) {
	meta.SetCondition(&st.Conditions, meta.Condition{
		Type: api.ConditionReady, Status: ready, ObservedGeneration: gen, Reason: readyReason, Message: readyMsg,
	})
	meta.SetCondition(&st.Conditions, meta.Condition{
		Type: api.ConditionProgressing, Status: progressing, ObservedGeneration: gen, Reason: progressingReason, Message: progressingMsg,
	})
}

// desiredSpec is the spec every WebServer of site should have.
func desiredSpec(site *api.Website) api.WebServerSpec {
	return api.WebServerSpec{Domain: site.Spec.Domain, Content: site.Spec.Content}
}

// webServerName names site's i-th WebServer.
func webServerName(site *api.Website, i int) string {
	return site.Name + "-" + strconv.Itoa(i)
}

// dnsOwner is how a Website is named in the DNS registry.
func dnsOwner(site *api.Website) string { return meta.KeyOf(site).String() }
