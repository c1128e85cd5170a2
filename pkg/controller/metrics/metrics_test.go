package metrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstanhq/capstan/pkg/controller/metrics"
)

func TestForRegistersOncePerRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := metrics.For(reg)
	if b := metrics.For(reg); b != a {
		t.Fatal("a second For on one registry returned other metrics")
	}
	other := prometheus.NewRegistry()
	if metrics.For(other) == a {
		t.Fatal("two registries share metrics")
	}
	if metrics.For(nil) == metrics.For(nil) {
		t.Fatal("unregistered metrics are shared")
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
