package report

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstanhq/capstan/pkg/loadtest/engine"
)

// Collector exposes a running test's progress as Prometheus metrics:
//
//	capstan_loadtest_shots_total{code}         completed shots by result code
//	capstan_loadtest_errors_total              failed shots
//	capstan_loadtest_dropped_samples_total     samples the aggregator could not take
//	capstan_loadtest_discarded_shots_total     shots skipped for being too late
//	capstan_loadtest_in_flight                 shots being fired
//	capstan_loadtest_instances                 running instances
//	capstan_loadtest_target_rps                the schedules' current rate
//	capstan_loadtest_rps                       completions in the last second
//	capstan_loadtest_latency_seconds{quantile} corrected latency so far (0.5, 0.99)
//
// Values are read from the engine at scrape time.
type Collector struct {
	src                                       func() engine.Progress
	shots, errors, dropped, discarded         *prometheus.Desc
	inflight, instances, target, rps, latency *prometheus.Desc
}

// NewCollector returns a collector reading progress from src (usually
// Engine.Progress).
func NewCollector(src func() engine.Progress, constLabels prometheus.Labels) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("capstan_loadtest_"+name, help, labels, constLabels)
	}
	return &Collector{
		src:       src,
		shots:     d("shots_total", "Completed shots by result code.", "code"),
		errors:    d("errors_total", "Failed shots."),
		dropped:   d("dropped_samples_total", "Samples the aggregator could not take."),
		discarded: d("discarded_shots_total", "Shots skipped for being later than overdueAfter."),
		inflight:  d("in_flight", "Shots being fired."),
		instances: d("instances", "Running instances."),
		target:    d("target_rps", "The schedules' current rate."),
		rps:       d("rps", "Completed shots in the last full second."),
		latency:   d("latency_seconds", "Latency from the intended time so far.", "quantile"),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.shots, c.errors, c.dropped, c.discarded, c.inflight, c.instances, c.target, c.rps, c.latency} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	p := c.src()
	for code, n := range p.Codes {
		ch <- prometheus.MustNewConstMetric(c.shots, prometheus.CounterValue, float64(n), code)
	}
	ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(p.Errors))
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(p.Dropped))
	ch <- prometheus.MustNewConstMetric(c.discarded, prometheus.CounterValue, float64(p.Discarded))
	ch <- prometheus.MustNewConstMetric(c.inflight, prometheus.GaugeValue, float64(p.InFlight))
	ch <- prometheus.MustNewConstMetric(c.instances, prometheus.GaugeValue, float64(p.Instances))
	ch <- prometheus.MustNewConstMetric(c.target, prometheus.GaugeValue, p.TargetRPS)
	ch <- prometheus.MustNewConstMetric(c.rps, prometheus.GaugeValue, p.RPS)
	ch <- prometheus.MustNewConstMetric(c.latency, prometheus.GaugeValue, p.P50.Seconds(), "0.5")
	ch <- prometheus.MustNewConstMetric(c.latency, prometheus.GaugeValue, p.P99.Seconds(), "0.99")
}
