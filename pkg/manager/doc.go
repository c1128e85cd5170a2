// Package manager runs an operator: it owns the store, the informer cache,
// a Prometheus registry, health and readiness probes, and a set of
// runnables (controllers and anything else with Start(ctx) error).
//
// Runnables start in controller-runtime's order — HTTP servers (metrics,
// probes, pprof), then caches (and their first sync), then runnables that
// run on every replica, then leader-elected runnables once this process
// leads — and stop in the reverse order, each group given the rest of the
// graceful shutdown timeout. Leader election is pluggable through
// LeaderElector (pkg/coordination implements it); without one every
// runnable runs at once and Elected is closed at start. Losing leadership
// stops the leader-elected runnables at once and makes Start return an
// error.
//
// The manager also runs the garbage collector for owner references
// (GarbageCollector), so dependents disappear when their owner does.
package manager
