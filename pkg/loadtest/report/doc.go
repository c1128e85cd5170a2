// Package report presents load test results: the live progress line, the
// final summary table, the JSON summary, pandora-compatible phout lines
// (for Yandex Tank pipelines), an HTML report with latency-over-time and
// latency-distribution charts drawn with gonum/plot, and Prometheus
// metrics while a run is going.
package report
