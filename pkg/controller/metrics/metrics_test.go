package metrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstanhq/capstan/pkg/controller/metrics"
)

func TestForRegistersOncePerRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := metrics.For(reg)
	b := metrics.For(reg) // a second controller on the same registry
	if b.ReconcileTotal != a.ReconcileTotal || b.ActiveWorkers != a.ActiveWorkers || b.ReconcileTime != a.ReconcileTime {
		t.Fatal("a second For on one registry returned other metrics")
	}
	other := prometheus.NewRegistry()
	if metrics.For(other).ReconcileTotal == a.ReconcileTotal {
		t.Fatal("two registries share metrics")
	}
	if metrics.For(nil).ReconcileTotal == metrics.For(nil).ReconcileTotal {
		t.Fatal("unregistered metrics are shared")
	}
	// Queue metrics of both sets land in the same series.
	a.Queue.NewRetriesMetric("q").Inc()
	b.Queue.NewRetriesMetric("q").Inc()
	if got := gather(t, reg, "workqueue_retries_total"); got != 2 {
		t.Fatalf("workqueue_retries_total = %v, want 2", got)
	}

	a.ReconcileTotal.WithLabelValues("c", "success").Inc()
	a.Queue.NewAddsMetric("c").Inc()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
		if mf.GetName() == "workqueue_adds_total" {
			labels := map[string]string{}
			for _, l := range mf.GetMetric()[0].GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["name"] != "c" || labels["controller"] != "c" {
				t.Fatalf("workqueue labels %v, want name and controller set to the queue's name", labels)
			}
		}
	}
	for _, n := range []string{"controller_runtime_reconcile_total", "workqueue_adds_total"} {
		if !got[n] {
			t.Fatalf("%s not gathered from the registry", n)
		}
	}
}

func gather(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func TestForPanicsOnAClashingMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "controller_runtime_reconcile_total", Help: "a clash"}))
	defer func() {
		if recover() == nil {
			t.Fatal("For registered over a clashing metric")
		}
	}()
	metrics.For(reg)
}
