// Package metrics defines the controller and work-queue metrics, with
// controller-runtime's names, registered on a registry of the caller's
// (one per manager) rather than a process-global one.
package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"
)

// Controller holds the controller_runtime_* metrics of one registry.
type Controller struct {
	// ReconcileTotal counts reconciles by controller and result
	// (success, error, requeue, requeue_after).
	ReconcileTotal *prometheus.CounterVec
	// ReconcileErrors counts reconciles that returned an error.
	ReconcileErrors *prometheus.CounterVec
	// TerminalReconcileErrors counts reconciles that returned a terminal
	// error.
	TerminalReconcileErrors *prometheus.CounterVec
	// ReconcilePanics counts recovered panics.
	ReconcilePanics *prometheus.CounterVec
	// ReconcileTime observes reconcile durations in seconds.
	ReconcileTime *prometheus.HistogramVec
	// MaxConcurrentReconciles is each controller's worker count.
	MaxConcurrentReconciles *prometheus.GaugeVec
	// ActiveWorkers is the number of workers reconciling now.
	ActiveWorkers *prometheus.GaugeVec
	// Queue provides the workqueue_* metrics.
	Queue workqueue.MetricsProvider
}

// For returns the metrics registered on reg, registering them on first use:
// controllers of one manager share its registry's metrics. A nil reg gives
// unregistered metrics. Nothing is kept outside reg, so a registry and its
// metrics go away together.
func For(reg prometheus.Registerer) *Controller {
	m := newController()
	if reg == nil {
		return m
	}
	q := m.Queue.(*queueMetrics)
	registerOrReuse(reg, &m.ReconcileTotal)
	registerOrReuse(reg, &m.ReconcileErrors)
	registerOrReuse(reg, &m.TerminalReconcileErrors)
	registerOrReuse(reg, &m.ReconcilePanics)
	registerOrReuse(reg, &m.ReconcileTime)
	registerOrReuse(reg, &m.MaxConcurrentReconciles)
	registerOrReuse(reg, &m.ActiveWorkers)
	registerOrReuse(reg, &q.depth)
	registerOrReuse(reg, &q.adds)
	registerOrReuse(reg, &q.latency)
	registerOrReuse(reg, &q.workDuration)
	registerOrReuse(reg, &q.unfinished)
	registerOrReuse(reg, &q.longest)
	registerOrReuse(reg, &q.retries)
	return m
}

// registerOrReuse registers *c on reg, or points *c at the collector
// already registered there under the same description. Any other
// registration error is a programming error (a clashing metric of another
// type), so it panics like MustRegister.
func registerOrReuse[C prometheus.Collector](reg prometheus.Registerer, c *C) {
	err := reg.Register(*c)
	if err == nil {
		return
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			*c = existing
			return
		}
	}
	panic(err)
}

func newController() *Controller {
	ctrl := []string{"controller"}
	q := &queueMetrics{
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: "workqueue", Name: "depth",
			Help: "Current depth of workqueue"}, []string{"name", "controller"}),
		adds: prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: "workqueue", Name: "adds_total",
			Help: "Total number of adds handled by workqueue"}, []string{"name", "controller"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: "workqueue", Name: "queue_duration_seconds",
			Help: "How long in seconds an item stays in workqueue before being requested", Buckets: prometheus.ExponentialBuckets(10e-9, 10, 12)},
			[]string{"name", "controller"}),
		workDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: "workqueue", Name: "work_duration_seconds",
			Help: "How long in seconds processing an item from workqueue takes.", Buckets: prometheus.ExponentialBuckets(10e-9, 10, 12)},
			[]string{"name", "controller"}),
		unfinished: prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: "workqueue", Name: "unfinished_work_seconds",
			Help: "How many seconds of work has been done that is in progress and hasn't been observed by work_duration."},
			[]string{"name", "controller"}),
		longest: prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: "workqueue", Name: "longest_running_processor_seconds",
			Help: "How many seconds has the longest running processor for workqueue been running."}, []string{"name", "controller"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: "workqueue", Name: "retries_total",
			Help: "Total number of retries handled by workqueue"}, []string{"name", "controller"}),
	}
	return &Controller{
		ReconcileTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "controller_runtime_reconcile_total",
			Help: "Total number of reconciliations per controller"}, []string{"controller", "result"}),
		ReconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "controller_runtime_reconcile_errors_total",
			Help: "Total number of reconciliation errors per controller"}, ctrl),
		TerminalReconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "controller_runtime_terminal_reconcile_errors_total",
			Help: "Total number of terminal reconciliation errors per controller"}, ctrl),
		ReconcilePanics: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "controller_runtime_reconcile_panics_total",
			Help: "Total number of reconciliation panics per controller"}, ctrl),
		ReconcileTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "controller_runtime_reconcile_time_seconds",
			Help: "Length of time per reconciliation per controller",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
				1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60}}, ctrl),
		MaxConcurrentReconciles: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "controller_runtime_max_concurrent_reconciles",
			Help: "Maximum number of concurrent reconciles per controller"}, ctrl),
		ActiveWorkers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "controller_runtime_active_workers",
			Help: "Number of currently used workers per controller"}, ctrl),
		Queue: q,
	}
}

// queueMetrics implements workqueue.MetricsProvider; the queue's name is
// the controller's, used for both labels as controller-runtime does.
type queueMetrics struct {
	depth, unfinished, longest *prometheus.GaugeVec
	adds, retries              *prometheus.CounterVec
	latency, workDuration      *prometheus.HistogramVec
}

func (q *queueMetrics) NewDepthMetric(name string) workqueue.GaugeMetric {
	return q.depth.WithLabelValues(name, name)
}
func (q *queueMetrics) NewAddsMetric(name string) workqueue.CounterMetric {
	return q.adds.WithLabelValues(name, name)
}
func (q *queueMetrics) NewLatencyMetric(name string) workqueue.HistogramMetric {
	return q.latency.WithLabelValues(name, name)
}
func (q *queueMetrics) NewWorkDurationMetric(name string) workqueue.HistogramMetric {
	return q.workDuration.WithLabelValues(name, name)
}
func (q *queueMetrics) NewUnfinishedWorkSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return q.unfinished.WithLabelValues(name, name)
}
func (q *queueMetrics) NewLongestRunningProcessorSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return q.longest.WithLabelValues(name, name)
}
func (q *queueMetrics) NewRetriesMetric(name string) workqueue.CounterMetric {
	return q.retries.WithLabelValues(name, name)
}
