package aggregate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
)

const ms = int64(time.Millisecond)

func runAgg(t *testing.T, opts Options, samples []Sample) *Result {
	t.Helper()
	a := New(opts)
	done := make(chan error)
	go func() { done <- a.Run(context.Background()) }()
	for _, s := range samples {
		a.Report(s)
	}
	a.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return a.Result()
}

func TestCountsAndLatencies(t *testing.T) {
	samples := []Sample{
		// intended 0, sent 5ms late, served in 10ms: latency 15ms.
		{Tag: "a", Intended: 0, Sent: 5 * ms, Done: 15 * ms, Proto: HTTP, Code: 200, BytesIn: 100, BytesOut: 10},
		{Tag: "a", Intended: 10 * ms, Sent: 10 * ms, Done: 12 * ms, Proto: HTTP, Code: 500, Class: Status},
		{Tag: "b", Intended: 20 * ms, Sent: 20 * ms, Done: 1020 * ms, Class: Timeout},
		{Tag: "b", Intended: 30 * ms, Sent: 30 * ms, Done: 1030 * ms, Proto: GRPC, Code: 14, Class: Status},
	}
	r := runAgg(t, Options{OverdueAfter: time.Millisecond}, samples)
	if r.Total.Count != 4 || r.Total.Errors != 3 || r.Total.Overdue != 1 || r.Total.BytesIn != 100 || r.Total.BytesOut != 10 {
		t.Fatalf("total %+v", r.Total)
	}
	if r.Tags["a"].Count != 2 || r.Tags["b"].Errors != 2 {
		t.Fatalf("tags %+v %+v", r.Tags["a"], r.Tags["b"])
	}
	for name, n := range map[string]int64{"http 200": 1, "http 500": 1, "timeout": 1, "grpc Unavailable": 1} {
		if r.Codes[name] == nil || r.Codes[name].Count != n {
			t.Errorf("code %q: %+v", name, r.Codes[name])
		}
	}
	if r.Classes["ok"] != 1 || r.Classes["status"] != 2 || r.Classes["timeout"] != 1 {
		t.Fatalf("classes %v", r.Classes)
	}
	a := r.Tags["a"]
	if a.Latency.Max() < 14900*time.Microsecond || a.Latency.Max() > 15100*time.Microsecond {
		t.Fatalf("corrected max %s, want 15ms", a.Latency.Max())
	}
	if a.Service.Max() < 9900*time.Microsecond || a.Service.Max() > 10100*time.Microsecond {
		t.Fatalf("service max %s, want 10ms", a.Service.Max())
	}
	if len(r.Timeline) != 2 || r.Timeline[0].Count != 2 || r.Timeline[1].Count != 2 || r.Timeline[1].Errors != 2 {
		t.Fatalf("timeline %+v", r.Timeline)
	}
}

func TestProgressRPS(t *testing.T) {
	var now atomic.Int64
	a := New(Options{Clock: func() time.Duration { return time.Duration(now.Load()) }})
	go a.Run(context.Background())
	defer a.Close()
	for i := int64(0); i < 30; i++ {
		a.Report(Sample{Done: 1*int64(time.Second) + i*ms}) // 30 done in second 1
	}
	for i := int64(0); i < 10; i++ {
		a.Report(Sample{Done: 2*int64(time.Second) + i*ms}) // 10 in second 2
	}
	deadline := time.Now().Add(10 * time.Second)
	for a.Progress().Count != 40 {
		if time.Now().After(deadline) {
			t.Fatal("samples not taken")
		}
		time.Sleep(time.Millisecond)
	}
	now.Store(int64(2500 * time.Millisecond))
	if p := a.Progress(); p.RPS != 30 {
		t.Fatalf("at 2.5s: rps %g, want 30 (second 1)", p.RPS)
	}
	now.Store(int64(3100 * time.Millisecond))
	if p := a.Progress(); p.RPS != 10 {
		t.Fatalf("at 3.1s: rps %g, want 10 (second 2)", p.RPS)
	}
}

func TestReportNeverBlocks(t *testing.T) {
	a := New(Options{Buffer: 4})
	done := make(chan struct{})
	go func() {
		for i := 0; i < 100; i++ {
			a.Report(Sample{Done: 1})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Report blocked with nobody reading")
	}
	go a.Run(context.Background())
	a.Close()
	deadline := time.Now().Add(10 * time.Second)
	for a.Progress().Count+a.Progress().Dropped != 100 {
		if time.Now().After(deadline) {
			t.Fatalf("progress %+v", a.Progress())
		}
		time.Sleep(time.Millisecond)
	}
	p := a.Progress()
	if p.Dropped != 96 || p.Count != 4 {
		t.Fatalf("dropped %d count %d, want 96 and 4", p.Dropped, p.Count)
	}
}

// TestMergeIsLossless splits samples over two aggregators, sends their
// results through JSON, merges them, and compares with one aggregator that
// saw everything.
func TestMergeIsLossless(t *testing.T) {
	var all, a, b []Sample
	for i := int64(0); i < 5000; i++ {
		s := Sample{Tag: fmt.Sprint("t", i%3), Intended: i * ms, Sent: i*ms + i%7*ms, Done: i*ms + (i*i)%997*ms, Proto: HTTP, Code: 200}
		if i%11 == 0 {
			s.Class, s.Code = Status, 503
		}
		all = append(all, s)
		if i%2 == 0 {
			a = append(a, s)
		} else {
			b = append(b, s)
		}
	}
	start := time.Unix(1700000000, 0)
	want := runAgg(t, Options{Start: start}, all)
	merged := &Result{}
	for _, part := range [][]Sample{a, b} {
		r := runAgg(t, Options{Start: start}, part)
		js, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var back Result
		if err := json.Unmarshal(js, &back); err != nil {
			t.Fatal(err)
		}
		merged.Merge(&back)
	}
	for _, q := range []float64{50, 90, 99, 99.9, 100} {
		if g, w := merged.Total.Latency.Quantile(q), want.Total.Latency.Quantile(q); g != w {
			t.Errorf("p%g merged %s, single %s", q, g, w)
		}
	}
	if merged.Total.Count != want.Total.Count || merged.Total.Errors != want.Total.Errors || merged.Total.Overdue != want.Total.Overdue {
		t.Fatalf("merged %+v, want %+v", merged.Total, want.Total)
	}
	if merged.Codes["http 503"].Count != want.Codes["http 503"].Count || merged.Tags["t1"].Service.Quantile(99) != want.Tags["t1"].Service.Quantile(99) {
		t.Fatal("per-code or per-tag numbers differ after merge")
	}
	if len(merged.Timeline) != len(want.Timeline) {
		t.Fatalf("timeline %d vs %d seconds", len(merged.Timeline), len(want.Timeline))
	}
	for i := range want.Timeline {
		if merged.Timeline[i].Count != want.Timeline[i].Count || merged.Timeline[i].P99 != want.Timeline[i].P99 || merged.Timeline[i].HDR != want.Timeline[i].HDR {
			t.Fatalf("second %d differs", i)
		}
	}
}

func TestHistogramJSONRejectsMismatch(t *testing.T) {
	h := NewHistogram()
	h.Record(5 * ms)
	js, _ := json.Marshal(h)
	bad := strings.Replace(string(js), `"count":1`, `"count":2`, 1)
	var back Histogram
	if err := json.Unmarshal([]byte(bad), &back); err == nil {
		t.Fatal("count mismatch accepted")
	}
	if err := json.Unmarshal([]byte(`{"count":0,"hdr":"!!"}`), &back); err == nil {
		t.Fatal("bad encoding accepted")
	}
}

func TestParseRule(t *testing.T) {
	good := map[string]Rule{
		"p99 > 200ms for 10s": {Metric: "p99", Op: ">", Threshold: float64(200 * time.Millisecond), For: 10 * time.Second},
		"error rate > 5%":     {Metric: "error_rate", Op: ">", Threshold: 0.05},
		"error_rate >= 0.1":   {Metric: "error_rate", Op: ">=", Threshold: 0.1},
		"service_p99.9 <= 1s": {Metric: "service_p99.9", Op: "<=", Threshold: float64(time.Second)},
		"rps < 100 for 5s":    {Metric: "rps", Op: "<", Threshold: 100, For: 5 * time.Second},
		"max > 2s":            {Metric: "max", Op: ">", Threshold: float64(2 * time.Second)},
		"errors > 0":          {Metric: "errors", Op: ">", Threshold: 0},
	}
	for text, want := range good {
		r, err := ParseRule(text)
		if err != nil {
			t.Errorf("%q: %v", text, err)
			continue
		}
		if r.Metric != want.Metric || r.Op != want.Op || r.Threshold != want.Threshold || r.For != want.For {
			t.Errorf("%q = %+v, want %+v", text, r, want)
		}
	}
	for _, text := range []string{"", "p99 > ", "p99 ~ 1s", "p0 > 1s", "p101 > 1s", "p99 > fast", "latency > 1s",
		"error_rate > lots", "p99 > 1s during 10s", "p99 > 1s for 10ms", "rps > x"} {
		if _, err := ParseRule(text); !errs.IsInvalidArgument(err) {
			t.Errorf("%q: err %v, want InvalidArgument", text, err)
		}
	}
}

func TestAutostopAndJudge(t *testing.T) {
	var now atomic.Int64
	rule, _ := ParseRule("p99 > 100ms for 3s")
	rate, _ := ParseRule("error_rate > 10%")
	var stops []Violation
	a := New(Options{Clock: func() time.Duration { return time.Duration(now.Load()) }, Rules: []Rule{rule, rate},
		OnStop: func(v Violation) { stops = append(stops, v) }})
	done := make(chan error)
	go func() { done <- a.Run(context.Background()) }()
	sec := int64(time.Second)
	// Seconds 0,1: fast. 2,3: slow. 4: fast (streak broken). 5,6,7: slow → stop after 7.
	for s := int64(0); s < 9; s++ {
		lat := 5 * ms
		if s == 2 || s == 3 || s >= 5 {
			lat = 300 * ms
		}
		for i := int64(0); i < 10; i++ {
			at := s*sec + i*50*ms
			class := OK
			if s == 8 {
				class = Status
			}
			a.Report(Sample{Intended: at, Sent: at, Done: at + lat, Class: class})
		}
	}
	now.Store(9 * sec)
	a.Close()
	<-done
	if len(stops) != 1 || stops[0].At != 8*time.Second {
		t.Fatalf("stops %+v, want one at 8s", stops)
	}
	if !strings.Contains(stops[0].String(), "p99 > 100ms for 3s") {
		t.Fatalf("violation text %q", stops[0].String())
	}
	r := a.Result()
	v := Judge(r, []Rule{rule, rate}, &stops[0])
	if v.Passed || len(v.Failures) != 2 || !strings.Contains(v.Failures[1], "error_rate > 10%") {
		t.Fatalf("verdict %+v", v)
	}
	if v := Judge(r, []Rule{rule}, nil); !v.Passed {
		t.Fatalf("window rules alone judged at the end: %+v", v)
	}
}

func TestClassifyError(t *testing.T) {
	cases := []struct {
		err   error
		class Class
	}{
		{nil, OK},
		{context.Canceled, Canceled},
		{context.DeadlineExceeded, Timeout},
		{fmt.Errorf("read: %w", os.ErrDeadlineExceeded), Timeout},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, Conn},
		{fmt.Errorf("x: %w", syscall.ECONNRESET), Conn},
		{io.ErrUnexpectedEOF, Conn},
		{errors.New("weird"), Other},
	}
	for _, c := range cases {
		if got, _ := ClassifyError(c.err); got != c.class {
			t.Errorf("%v: %s, want %s", c.err, got, c.class)
		}
	}
	if _, errno := ClassifyError(syscall.ECONNREFUSED); errno != int32(syscall.ECONNREFUSED) {
		t.Errorf("errno %d", errno)
	}
}

type failSink struct{ n, closed int }

func (f *failSink) Write(*Sample) error {
	f.n++
	if f.n == 2 {
		return errors.New("disk full")
	}
	return nil
}
func (f *failSink) Close() error { f.closed++; return nil }

func TestSinkErrorStopsSinkOnly(t *testing.T) {
	fs := &failSink{}
	a := New(Options{Sinks: []Sink{fs}})
	done := make(chan error)
	go func() { done <- a.Run(context.Background()) }()
	for i := 0; i < 5; i++ {
		a.Report(Sample{})
	}
	a.Close()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Run: %v", err)
	}
	if fs.n != 2 || fs.closed != 1 || a.Result().Total.Count != 5 {
		t.Fatalf("sink saw %d, closed %d; total %d", fs.n, fs.closed, a.Result().Total.Count)
	}
}
