// Package controller runs reconcilers: a Controller takes events from its
// sources into a rate-limited, de-duplicating work queue
// (k8s.io/client-go/util/workqueue) and calls a Reconciler for each key with
// bounded concurrency, so that one key is never reconciled by two workers
// at once and a burst of changes to one object collapses into few
// reconciles.
//
// Results steer the queue as in controller-runtime: an error requeues with
// per-item exponential backoff (5ms→1000s) under an overall token bucket; a
// TerminalError is logged and counted but not retried; RequeueAfter
// schedules the key again; success forgets the key's failures. Panics are
// recovered (and counted) by default. Each reconcile gets a logger with
// controller, namespace, name and reconcileID (LoggerFrom), and the
// controller_runtime_* and workqueue_* metrics are recorded on the
// registry in Options.
//
// Sub-packages: handler (events → keys), predicate (event filters) and
// builder (the fluent ControllerManagedBy(mgr).For(...).Owns(...) API).
package controller
