package manager

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/source"
	"github.com/capstanhq/capstan/pkg/store"
)

// Runnable is anything the manager runs: Start blocks until ctx ends (or
// the runnable is done) and returns nil, or returns an error that stops the
// manager.
type Runnable interface {
	Start(ctx context.Context) error
}

// RunnableFunc adapts a function to Runnable.
type RunnableFunc func(ctx context.Context) error

// Start implements Runnable.
func (f RunnableFunc) Start(ctx context.Context) error { return f(ctx) }

// LeaderElectionRunnable is a Runnable that says whether it must run only
// on the leader. Runnables that do not implement it are leader-elected.
type LeaderElectionRunnable interface {
	NeedLeaderElection() bool
}

// LeaderElector campaigns for leadership. Run blocks: it calls onStarted
// (in its own goroutine) once this process leads, and returns nil when ctx
// ends, or an error when leadership is lost or cannot be sought.
type LeaderElector interface {
	Run(ctx context.Context, onStarted func(ctx context.Context)) error
}

// Checker is a health or readiness check: nil means healthy.
type Checker func(req *http.Request) error

// Options configure a Manager.
type Options struct {
	// Store is where resources live. Required.
	Store store.Store
	// Namespace restricts the cache to one namespace; empty means all.
	Namespace string
	// Logger is the manager's logger; controllers derive theirs from it.
	Logger logr.Logger
	// MetricsBindAddress serves /metrics ("" or "0" disables).
	MetricsBindAddress string
	// HealthProbeBindAddress serves /healthz and /readyz ("" or "0"
	// disables).
	HealthProbeBindAddress string
	// PprofBindAddress serves /debug/pprof ("" or "0" disables).
	PprofBindAddress string
	// GracefulShutdownTimeout bounds the whole shutdown; default 30s, a
	// negative value waits forever.
	GracefulShutdownTimeout time.Duration
	// LeaderElection runs leader-elected runnables only while
	// LeaderElector says this process leads.
	LeaderElection bool
	// LeaderElector campaigns when LeaderElection is set. If nil, the
	// manager builds a coordination.Elector on the store's Lease named
	// LeaderElectionID (registering the coordination kinds in the store's
	// scheme if they are missing).
	LeaderElector LeaderElector
	// LeaderElectionID names the Lease; required when the manager builds
	// the elector.
	LeaderElectionID string
	// LeaderElectionNamespace holds the Lease; default "default".
	LeaderElectionNamespace string
	// LeaseDuration, RenewDeadline and RetryPeriod tune the elector the
	// manager builds; zero values mean 15s, 10s and 2s.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// LeaderElectionReleaseOnCancel gives the lease up on a clean stop, so
	// that a successor need not wait for it to expire.
	LeaderElectionReleaseOnCancel bool
	// Registry is the manager's metrics registry; default a new one with
	// Go and process collectors.
	Registry *prometheus.Registry
	// Cache configures the informer cache.
	Cache source.CacheOptions
}

// Manager runs runnables over a shared store and cache.
type Manager struct {
	opts     Options
	log      logr.Logger
	cache    *source.Cache
	registry *prometheus.Registry

	mu        sync.Mutex
	started   bool
	servers   []Runnable
	others    []Runnable
	elected   []Runnable
	health    map[string]Checker
	ready     map[string]Checker
	electedCh chan struct{}
	groups    map[string]*group // set at Start
	addrs     map[string]string
	errCh     chan error
}

// New validates opts and returns a manager.
func New(opts Options) (*Manager, error) {
	if opts.Store == nil {
		return nil, errs.Invalid("store", "a store is required")
	}
	if opts.GracefulShutdownTimeout == 0 {
		opts.GracefulShutdownTimeout = 30 * time.Second
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
		opts.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if opts.LeaderElection && opts.LeaderElector == nil {
		le, err := defaultElector(opts)
		if err != nil {
			return nil, err
		}
		opts.LeaderElector = le
	}
	co := opts.Cache
	if co.Namespace == "" {
		co.Namespace = opts.Namespace
	}
	if co.Logger.GetSink() == nil {
		co.Logger = opts.Logger.WithName("cache")
	}
	m := &Manager{
		opts: opts, log: opts.Logger, registry: opts.Registry,
		cache:     source.NewCache(opts.Store, co),
		health:    map[string]Checker{},
		ready:     map[string]Checker{},
		electedCh: make(chan struct{}),
		addrs:     map[string]string{},
		errCh:     make(chan error, 8),
	}
	m.ready["cache-sync"] = func(*http.Request) error {
		if !m.cache.HasSynced() {
			return errors.New("caches have not synced")
		}
		return nil
	}
	return m, nil
}

// Store returns the store.
func (m *Manager) Store() store.Store { return m.opts.Store }

// Cache returns the informer cache.
func (m *Manager) Cache() *source.Cache { return m.cache }

// Logger returns the manager's logger.
func (m *Manager) Logger() logr.Logger { return m.log }

// Registry returns the manager's metrics registry.
func (m *Manager) Registry() *prometheus.Registry { return m.registry }

// Elected is closed when this process leads (at start without leader
// election).
func (m *Manager) Elected() <-chan struct{} { return m.electedCh }

// Add adds a runnable. Runnables added after Start start at once in their
// group; once the manager is stopping, Add fails with
// errs.FailedPrecondition.
func (m *Manager) Add(r Runnable) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	name := "elected"
	if le, ok := r.(LeaderElectionRunnable); ok && !le.NeedLeaderElection() {
		name = "others"
	}
	if m.started && m.groups[name].ctx.Err() != nil {
		return errs.New(errs.FailedPrecondition, "manager is stopping")
	}
	if m.started && (name == "others" || m.isElected()) {
		m.groups[name].start(r)
		return nil
	}
	if name == "others" {
		m.others = append(m.others, r)
	} else {
		m.elected = append(m.elected, r)
	}
	return nil
}

// AddHealthzCheck adds a liveness check served on /healthz.
func (m *Manager) AddHealthzCheck(name string, c Checker) error { return m.addCheck(m.health, name, c) }

// AddReadyzCheck adds a readiness check served on /readyz.
func (m *Manager) AddReadyzCheck(name string, c Checker) error { return m.addCheck(m.ready, name, c) }

func (m *Manager) addCheck(set map[string]Checker, name string, c Checker) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := set[name]; ok {
		return errs.New(errs.AlreadyExists, "check %q already added", name)
	}
	set[name] = c
	return nil
}

// Addr returns the address a server listens on once started: "metrics",
// "health" or "pprof"; empty if it is disabled or not started.
func (m *Manager) Addr(server string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.addrs[server]
}

// group is a set of runnables sharing a context that is cancelled when the
// group stops.
type group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errCh  chan<- error
}

func newGroup(errCh chan<- error) *group {
	ctx, cancel := context.WithCancel(context.Background())
	return &group{ctx: ctx, cancel: cancel, errCh: errCh}
}

func (g *group) start(r Runnable) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := r.Start(g.ctx); err != nil {
			select {
			case g.errCh <- err:
			default:
			}
		}
	}()
}

// stop cancels the group and waits until deadline; it reports whether the
// runnables finished in time.
func (g *group) stop(deadline <-chan time.Time) bool {
	g.cancel()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-deadline:
		return false
	}
}

// Start runs everything until ctx ends or a runnable fails, then shuts
// down in reverse order. It returns nil after a clean shutdown, or the
// error that stopped the manager (including lost leadership and a shutdown
// that exceeded its timeout).
func (m *Manager) Start(ctx context.Context) (err error) {
	m.mu.Lock()
	if m.started {
		m.mu.Unlock()
		return errs.New(errs.FailedPrecondition, "manager already started")
	}
	m.started = true
	m.groups = map[string]*group{}
	for _, n := range []string{"servers", "caches", "others", "elected"} {
		m.groups[n] = newGroup(m.errCh)
	}
	m.mu.Unlock()

	defer func() {
		if serr := m.shutdown(); serr != nil && err == nil {
			err = serr
		}
	}()

	if err := m.startServers(); err != nil {
		return err
	}
	m.groups["caches"].start(RunnableFunc(m.cache.Start))
	m.log.Info("waiting for caches to sync")
	if err := m.waitForCacheSync(ctx); err != nil || ctx.Err() != nil {
		return err // a failure, or nil: stopped before the caches synced
	}

	m.mu.Lock()
	for _, r := range m.others {
		m.groups["others"].start(r)
	}
	m.mu.Unlock()

	lost := make(chan error, 1)
	if m.opts.LeaderElection {
		go func() {
			err := m.opts.LeaderElector.Run(m.groups["others"].ctx, func(context.Context) { m.becomeLeader() })
			if err == nil && m.groups["others"].ctx.Err() == nil {
				err = errors.New("leader election ended")
			}
			if err != nil {
				lost <- errs.Wrap(errs.Aborted, err, "leader election lost")
			}
		}()
	} else {
		m.becomeLeader()
	}

	select {
	case <-ctx.Done():
		return nil
	case err := <-m.errCh:
		return err
	case err := <-lost:
		// Stop the leader-elected work at once, before anything else.
		m.groups["elected"].stop(time.After(m.opts.GracefulShutdownTimeout))
		return err
	}
}

// waitForCacheSync waits until the caches synced or ctx ended (nil), or
// a runnable (the cache itself) failed (its error).
func (m *Manager) waitForCacheSync(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	synced := make(chan struct{})
	go func() {
		m.cache.WaitForCacheSync(sctx)
		close(synced)
	}()
	select {
	case <-synced:
		return nil
	case err := <-m.errCh:
		return err
	}
}

func (m *Manager) isElected() bool {
	select {
	case <-m.electedCh:
		return true
	default:
		return false
	}
}

func (m *Manager) becomeLeader() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.groups["elected"].ctx.Err() != nil {
		return // stopping (or leadership already lost): too late to lead
	}
	select {
	case <-m.electedCh:
		return
	default:
	}
	m.log.Info("elected; starting leader-elected runnables", "count", len(m.elected))
	for _, r := range m.elected {
		m.groups["elected"].start(r)
	}
	close(m.electedCh)
}

func (m *Manager) shutdown() error {
	var deadline <-chan time.Time
	if m.opts.GracefulShutdownTimeout > 0 {
		deadline = time.After(m.opts.GracefulShutdownTimeout)
	}
	for _, n := range []string{"elected", "others", "caches", "servers"} {
		if !m.groups[n].stop(deadline) {
			for _, rest := range []string{"elected", "others", "caches", "servers"} {
				m.groups[rest].cancel()
			}
			return errs.New(errs.DeadlineExceeded, "graceful shutdown timed out after %v waiting for %s runnables", m.opts.GracefulShutdownTimeout, n)
		}
	}
	m.log.Info("stopped")
	return nil
}

func (m *Manager) startServers() error {
	serve := func(name, addr string, h http.Handler) error {
		if addr == "" || addr == "0" {
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return errs.Wrap(errs.Unavailable, err, "%s server: listen on %s", name, addr)
		}
		m.mu.Lock()
		m.addrs[name] = ln.Addr().String()
		m.mu.Unlock()
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		m.groups["servers"].start(RunnableFunc(func(ctx context.Context) error {
			go func() {
				<-ctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = srv.Shutdown(sctx)
			}()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("%s server: %w", name, err)
			}
			return nil
		}))
		m.log.Info("serving", "server", name, "address", ln.Addr().String())
		return nil
	}
	metricsMux := http.NewServeMux()
	metricsMux.Handle("/metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry}))
	if err := serve("metrics", m.opts.MetricsBindAddress, metricsMux); err != nil {
		return err
	}
	probes := http.NewServeMux()
	probes.HandleFunc("/healthz", m.checkHandler(m.health))
	probes.HandleFunc("/readyz", m.checkHandler(m.ready))
	if err := serve("health", m.opts.HealthProbeBindAddress, probes); err != nil {
		return err
	}
	pp := http.NewServeMux()
	pp.HandleFunc("/debug/pprof/", pprof.Index)
	pp.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	pp.HandleFunc("/debug/pprof/profile", pprof.Profile)
	pp.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	pp.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return serve("pprof", m.opts.PprofBindAddress, pp)
}

func (m *Manager) checkHandler(set map[string]Checker) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		checks := make(map[string]Checker, len(set))
		for k, v := range set {
			checks[k] = v
		}
		m.mu.Unlock()
		failed := false
		var body []byte
		for name, c := range checks {
			if err := c(r); err != nil {
				failed = true
				body = fmt.Appendf(body, "[-]%s failed: %v\n", name, err)
			} else {
				body = fmt.Appendf(body, "[+]%s ok\n", name)
			}
		}
		if failed {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write(body)
	}
}
