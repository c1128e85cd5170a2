package controller

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"

	"github.com/capstanhq/capstan/pkg/controller/metrics"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
)

// Request names the object to reconcile.
type Request = meta.Key

// Result tells the controller what to do with a reconciled key.
type Result struct {
	// Requeue asks for another reconcile after the rate limiter's delay.
	Requeue bool
	// RequeueAfter, if positive, asks for another reconcile after this
	// long (and wins over Requeue).
	RequeueAfter time.Duration
}

// IsZero reports whether r asks for nothing.
func (r Result) IsZero() bool { return r == Result{} }

// Reconciler converges the world toward one object's desired state. It
// reads current state and acts; it must not rely on seeing every event.
type Reconciler interface {
	// Reconcile handles one key. A returned error requeues it with
	// backoff unless it is a TerminalError.
	Reconcile(ctx context.Context, req Request) (Result, error)
}

// Func adapts a function to Reconciler.
type Func func(ctx context.Context, req Request) (Result, error)

// Reconcile implements Reconciler.
func (f Func) Reconcile(ctx context.Context, req Request) (Result, error) { return f(ctx, req) }

type terminalError struct{ err error }

func (e *terminalError) Error() string { return "terminal error: " + e.err.Error() }
func (e *terminalError) Unwrap() error { return e.err }

// TerminalError wraps err so that the controller records it but does not
// retry: the reconcile cannot succeed until something else changes.
func TerminalError(err error) error {
	if err == nil {
		err = errors.New("nil terminal error")
	}
	return &terminalError{err: err}
}

// IsTerminal reports whether err is (or wraps) a TerminalError.
func IsTerminal(err error) bool {
	var t *terminalError
	return errors.As(err, &t)
}

// LoggerFrom returns the per-reconcile logger in ctx (controller,
// namespace, name, reconcileID), or a discarding one.
func LoggerFrom(ctx context.Context) logr.Logger { return logr.FromContextOrDiscard(ctx) }

// Options configure a Controller.
type Options struct {
	// MaxConcurrentReconciles is the number of workers; default 1.
	MaxConcurrentReconciles int
	// RateLimiter decides requeue delays; default per-item exponential
	// 5ms→1000s combined with an overall 10 qps / 100 burst bucket.
	RateLimiter workqueue.TypedRateLimiter[Request]
	// RecoverPanic turns reconcile panics into errors; default true.
	RecoverPanic *bool
	// ReconcileTimeout bounds each reconcile's context; 0 means none.
	ReconcileTimeout time.Duration
	// CacheSyncTimeout bounds the wait for sources to sync; default 2m.
	CacheSyncTimeout time.Duration
	// NeedLeaderElection says whether the controller runs only on the
	// leader; default true.
	NeedLeaderElection *bool
	// Logger is the controller's logger.
	Logger logr.Logger
	// Registry receives the controller's metrics; nil: not exported.
	Registry prometheus.Registerer
	// Filter, if set, drops keys before they are reconciled (a sharded
	// controller reconciles only its shards' keys). Dropped keys are
	// forgotten.
	Filter func(Request) bool
}

// Controller runs a Reconciler over the keys its sources enqueue.
type Controller struct {
	name    string
	do      Reconciler
	opts    Options
	metrics *metrics.Controller
	m       boundMetrics

	// queue is made on first use (Queue, Start): a queue runs goroutines
	// until it is shut down, which only a started controller does.
	queueOnce sync.Once
	queue     source.Queue

	mu      sync.Mutex
	sources []source.Source
	ctx     context.Context // set on Start
	started bool
}

// New returns a controller named name (unique per manager: it labels
// metrics and logs) that reconciles with r.
func New(name string, r Reconciler, opts Options) (*Controller, error) {
	if name == "" {
		return nil, errs.Invalid("name", "controller name is required")
	}
	if r == nil {
		return nil, errs.Invalid("reconciler", "reconciler is required")
	}
	if opts.MaxConcurrentReconciles <= 0 {
		opts.MaxConcurrentReconciles = 1
	}
	if opts.RateLimiter == nil {
		opts.RateLimiter = workqueue.DefaultTypedControllerRateLimiter[Request]()
	}
	if opts.RecoverPanic == nil {
		t := true
		opts.RecoverPanic = &t
	}
	if opts.CacheSyncTimeout <= 0 {
		opts.CacheSyncTimeout = 2 * time.Minute
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	opts.Logger = opts.Logger.WithValues("controller", name)
	m := metrics.For(opts.Registry)
	c := &Controller{name: name, do: r, opts: opts, metrics: m}
	c.m = boundMetrics{
		active:        m.ActiveWorkers.WithLabelValues(name),
		duration:      m.ReconcileTime.WithLabelValues(name),
		errors:        m.ReconcileErrors.WithLabelValues(name),
		terminal:      m.TerminalReconcileErrors.WithLabelValues(name),
		panics:        m.ReconcilePanics.WithLabelValues(name),
		resError:      m.ReconcileTotal.WithLabelValues(name, "error"),
		resRequeueAft: m.ReconcileTotal.WithLabelValues(name, "requeue_after"),
		resRequeue:    m.ReconcileTotal.WithLabelValues(name, "requeue"),
		resSuccess:    m.ReconcileTotal.WithLabelValues(name, "success"),
	}
	return c, nil
}

// boundMetrics are the controller's metric children, looked up once.
type boundMetrics struct {
	active                                          prometheus.Gauge
	duration                                        prometheus.Observer
	errors, terminal, panics                        prometheus.Counter
	resError, resRequeueAft, resRequeue, resSuccess prometheus.Counter
}

// Name returns the controller's name.
func (c *Controller) Name() string { return c.name }

// Queue returns the controller's work queue (for tests and custom
// sources). The queue runs goroutines until the controller stops, so a
// controller whose Queue was asked for should be started (or the queue
// shut down).
func (c *Controller) Queue() source.Queue {
	c.queueOnce.Do(func() {
		c.queue = workqueue.NewTypedRateLimitingQueueWithConfig(c.opts.RateLimiter, workqueue.TypedRateLimitingQueueConfig[Request]{
			Name:            c.name,
			MetricsProvider: c.metrics.Queue,
		})
	})
	return c.queue
}

// NeedLeaderElection implements the manager's LeaderElectionRunnable.
func (c *Controller) NeedLeaderElection() bool {
	return c.opts.NeedLeaderElection == nil || *c.opts.NeedLeaderElection
}

// Watch adds a source. Sources added after Start start at once.
func (c *Controller) Watch(src source.Source) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return src.Start(c.ctx, c.Queue())
	}
	c.sources = append(c.sources, src)
	return nil
}

// Start starts the sources, waits for their caches, runs the workers and
// blocks until ctx ends; then it stops taking work, waits for in-flight
// reconciles to return and returns nil.
func (c *Controller) Start(ctx context.Context) error {
	c.mu.Lock()
	if c.started {
		c.mu.Unlock()
		return errs.New(errs.FailedPrecondition, "controller %s already started", c.name)
	}
	c.started = true
	c.ctx = ctx
	srcs := c.sources
	c.mu.Unlock()
	defer c.Queue().ShutDown() // the workers below use c.queue, made here

	for _, s := range srcs {
		if err := s.Start(ctx, c.queue); err != nil {
			return errs.Wrap(errs.CodeOf(err), err, "controller %s: start source", c.name)
		}
	}
	syncCtx, cancel := context.WithTimeout(ctx, c.opts.CacheSyncTimeout)
	defer cancel()
	for _, s := range srcs {
		if ss, ok := s.(source.SyncingSource); ok {
			if err := ss.WaitForSync(syncCtx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("controller %s: %w", c.name, err)
			}
		}
	}

	c.metrics.MaxConcurrentReconciles.WithLabelValues(c.name).Set(float64(c.opts.MaxConcurrentReconciles))
	c.opts.Logger.Info("starting workers", "workers", c.opts.MaxConcurrentReconciles)
	var wg sync.WaitGroup
	// Reconciles in flight at shutdown finish with a live context; the
	// manager's graceful shutdown timeout bounds the wait. Keys still
	// queued then are not reconciled (the queue would hand them out until
	// empty): the next start lists everything again.
	workCtx := context.WithoutCancel(ctx)
	for i := 0; i < c.opts.MaxConcurrentReconciles; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c.processNext(ctx, workCtx) {
			}
		}()
	}
	<-ctx.Done()
	c.opts.Logger.Info("stopping; waiting for workers")
	c.queue.ShutDown()
	wg.Wait()
	c.opts.Logger.Info("workers stopped")
	return nil
}

// processNext reconciles the next key with ctx; it reports false once the
// queue shut down or stop ended.
func (c *Controller) processNext(stop, ctx context.Context) bool {
	req, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(req)
	if stop.Err() != nil {
		return false
	}
	if c.opts.Filter != nil && !c.opts.Filter(req) {
		c.queue.Forget(req)
		return true
	}
	c.m.active.Inc()
	defer c.m.active.Dec()
	c.reconcileHandler(ctx, req)
	return true
}

func (c *Controller) reconcileHandler(ctx context.Context, req Request) {
	id := uuid.NewString()
	log := c.opts.Logger.WithValues("namespace", req.Namespace, "name", req.Name, "reconcileID", id)
	ctx = logr.NewContext(ctx, log)
	if c.opts.ReconcileTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.ReconcileTimeout)
		defer cancel()
	}
	start := time.Now()
	res, err := c.reconcile(ctx, req)
	c.m.duration.Observe(time.Since(start).Seconds())

	switch {
	case err != nil:
		c.m.errors.Inc()
		c.m.resError.Inc()
		if IsTerminal(err) {
			c.m.terminal.Inc()
			c.queue.Forget(req)
			log.Error(err, "reconciler returned a terminal error; not retrying")
			return
		}
		c.queue.AddRateLimited(req)
		log.Error(err, "reconciler error; requeuing with backoff")
	case res.RequeueAfter > 0:
		c.queue.Forget(req)
		c.queue.AddAfter(req, res.RequeueAfter)
		c.m.resRequeueAft.Inc()
	case res.Requeue:
		c.queue.AddRateLimited(req)
		c.m.resRequeue.Inc()
	default:
		c.queue.Forget(req)
		c.m.resSuccess.Inc()
	}
}

func (c *Controller) reconcile(ctx context.Context, req Request) (res Result, err error) {
	if *c.opts.RecoverPanic {
		defer func() {
			if r := recover(); r != nil {
				c.m.panics.Inc()
				err = errs.New(errs.Internal, "panic in reconciler: %v", r)
				LoggerFrom(ctx).Error(err, "recovered panic", "stack", string(debug.Stack()))
			}
		}()
	}
	return c.do.Reconcile(ctx, req)
}
