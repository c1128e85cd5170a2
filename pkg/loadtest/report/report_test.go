package report

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/engine"
)

const ms1 = int64(time.Millisecond)

var start = time.Unix(1700000000, 250*int64(time.Millisecond))

// result aggregates samples into an engine result.
func result(t *testing.T, samples []aggregate.Sample, sinks ...aggregate.Sink) *engine.Result {
	t.Helper()
	rule, _ := aggregate.ParseRule("error_rate > 10%")
	a := aggregate.New(aggregate.Options{Start: start, Sinks: sinks, Clock: func() time.Duration { return 3 * time.Second }})
	done := make(chan error)
	go func() { done <- a.Run(context.Background()) }()
	for _, s := range samples {
		a.Report(s)
	}
	a.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	res := a.Result()
	return &engine.Result{Result: res, Stop: engine.StopDone, Verdict: aggregate.Judge(res, []aggregate.Rule{rule}, nil)}
}

func samples() []aggregate.Sample {
	var out []aggregate.Sample
	for i := int64(0); i < 300; i++ {
		s := aggregate.Sample{Tag: "home", Intended: i * 10 * ms1, Sent: i*10*ms1 + ms1, Done: i*10*ms1 + 3*ms1 + i%50*ms1,
			Proto: aggregate.HTTP, Code: 200, BytesOut: 80, BytesIn: 512}
		if i%5 == 0 {
			s.Tag, s.Code, s.Class = "api", 503, aggregate.Status
		}
		out = append(out, s)
	}
	return out
}

func TestPhout(t *testing.T) {
	var b bytes.Buffer
	p := NewPhout(&b, false)
	s := aggregate.Sample{Tag: "a\tb", Intended: 5 * ms1, Sent: 7 * ms1, Done: 19*ms1 + 500_000,
		BytesOut: 100, BytesIn: 2000, Code: 404, Proto: aggregate.HTTP, Class: aggregate.Status}
	res := result(t, []aggregate.Sample{s}, p)
	_ = res
	// start is …0.250 s; sent at +7ms → .257; service 12.5ms = 12500µs.
	want := "1700000000.257\ta_b\t12500\t0\t0\t12500\t0\t12500\t100\t2000\t0\t404\n"
	if b.String() != want {
		t.Fatalf("phout\n%q\nwant\n%q", b.String(), want)
	}
	b.Reset()
	pc := NewPhout(&b, true)
	s.Tag, s.Class, s.Code, s.Errno, s.Proto = "", aggregate.Timeout, 0, 110, aggregate.NoProto
	result(t, []aggregate.Sample{s}, pc)
	// Corrected: intended at .255, latency 14.5ms.
	want = "1700000000.255\t-\t14500\t0\t0\t14500\t0\t14500\t100\t2000\t110\t0\n"
	if b.String() != want {
		t.Fatalf("corrected phout\n%q\nwant\n%q", b.String(), want)
	}

	// Phases: connect, send and receive as measured, latency the rest of
	// interval_real.
	b.Reset()
	s = aggregate.Sample{Tag: "p", Intended: 5 * ms1, Sent: 7 * ms1, Done: 19*ms1 + 500_000,
		Connect: 1_200_400, Send: 300_000, Receive: 4_000_999, Code: 200, Proto: aggregate.HTTP}
	result(t, []aggregate.Sample{s}, NewPhout(&b, false))
	want = "1700000000.257\tp\t12500\t1200\t300\t7000\t4000\t12500\t0\t0\t0\t200\n"
	if b.String() != want {
		t.Fatalf("phout with phases\n%q\nwant\n%q", b.String(), want)
	}
	b.Reset()
	result(t, []aggregate.Sample{s}, NewPhout(&b, true))
	want = "1700000000.255\tp\t14500\t1200\t300\t9000\t4000\t14500\t0\t0\t0\t200\n"
	if b.String() != want {
		t.Fatalf("corrected phout with phases\n%q\nwant\n%q", b.String(), want)
	}
	// Phases that do not fit the interval widen it.
	b.Reset()
	s.Receive = 20 * ms1
	result(t, []aggregate.Sample{s}, NewPhout(&b, false))
	want = "1700000000.257\tp\t21500\t1200\t300\t0\t20000\t21500\t0\t0\t0\t200\n"
	if b.String() != want {
		t.Fatalf("phout with phases beyond the interval\n%q\nwant\n%q", b.String(), want)
	}
}

func TestSummaryAndJSON(t *testing.T) {
	r := result(t, samples())
	var b bytes.Buffer
	if err := WriteSummary(&b, r); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"stopped: done", "300 shots", "total", "tag api", "tag home", "http 200", "http 503",
		"verdict: FAILED", `"error_rate > 10%": observed 20.00%`} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	if err := WriteJSON(&b, r); err != nil {
		t.Fatal(err)
	}
	var back engine.Result
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Total.Count != 300 || back.Codes["http 503"].Count != 60 || back.Verdict.Passed || back.Stop != "done" {
		t.Fatalf("JSON round trip: %+v", back.Result.Total)
	}
	if back.Total.Latency.Quantile(99) != r.Total.Latency.Quantile(99) {
		t.Fatal("histogram changed in JSON")
	}
}

func TestProgressLine(t *testing.T) {
	p := engine.Progress{Progress: aggregate.Progress{Elapsed: 12300 * time.Millisecond, Count: 200, Errors: 3, RPS: 99,
		P50: 1500 * time.Microsecond, P99: 120 * time.Millisecond, Dropped: 2}, TargetRPS: 100, InFlight: 4}
	got := ProgressLine(p)
	want := "   12s  rps 99/100  inflight 4  p50 1.50ms  p99 120ms  errors 3 (1.50%)  dropped 2"
	if got != want {
		t.Fatalf("%q\nwant %q", got, want)
	}
}

func TestHTML(t *testing.T) {
	var b bytes.Buffer
	if err := WriteHTML(&b, result(t, samples())); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if n := strings.Count(out, "<svg"); n != 3 {
		t.Fatalf("%d charts, want 3", n)
	}
	for _, want := range []string{"Latency over time", "Latency distribution", "Responses per second", "Verdict: FAILED", "tag api", "stroke:#1F77B4", "stroke:#D62728"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// An empty result still renders.
	b.Reset()
	if err := WriteHTML(&b, result(t, nil)); err != nil {
		t.Fatal(err)
	}
}

func TestCollector(t *testing.T) {
	p := engine.Progress{Progress: aggregate.Progress{Count: 10, Errors: 2, P99: 250 * time.Millisecond,
		Codes: map[string]int64{"http 200": 8, "http 500": 2}}, InFlight: 3, TargetRPS: 50}
	c := NewCollector(func() engine.Progress { return p }, prometheus.Labels{"test": "t1"})
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	expected := `
# HELP capstan_loadtest_shots_total Completed shots by result code.
# TYPE capstan_loadtest_shots_total counter
capstan_loadtest_shots_total{code="http 200",test="t1"} 8
capstan_loadtest_shots_total{code="http 500",test="t1"} 2
# HELP capstan_loadtest_in_flight Shots being fired.
# TYPE capstan_loadtest_in_flight gauge
capstan_loadtest_in_flight{test="t1"} 3
# HELP capstan_loadtest_latency_seconds Latency from the intended time so far.
# TYPE capstan_loadtest_latency_seconds gauge
capstan_loadtest_latency_seconds{quantile="0.5",test="t1"} 0
capstan_loadtest_latency_seconds{quantile="0.99",test="t1"} 0.25
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected),
		"capstan_loadtest_shots_total", "capstan_loadtest_in_flight", "capstan_loadtest_latency_seconds"); err != nil {
		t.Fatal(err)
	}
}
