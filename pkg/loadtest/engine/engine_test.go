package engine

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/ammo"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
	"github.com/capstanhq/capstan/pkg/loadtest/files"
	"github.com/capstanhq/capstan/pkg/loadtest/gun"
	"github.com/capstanhq/capstan/pkg/loadtest/schedule"
)

func d(v time.Duration) config.Duration { return config.Duration(v) }

// captureSink keeps every sample.
type captureSink struct {
	mu      sync.Mutex
	samples []aggregate.Sample
}

func (c *captureSink) Write(s *aggregate.Sample) error {
	c.mu.Lock()
	c.samples = append(c.samples, *s)
	c.mu.Unlock()
	return nil
}
func (c *captureSink) Close() error { return nil }

// server is a local HTTP server whose latency the test controls: a fixed
// delay, and a stall window during which every request waits until the
// window ends.
type server struct {
	*httptest.Server
	delay      atomic.Int64 // ns
	stallFrom  atomic.Int64 // unix ns
	stallUntil atomic.Int64
	status     atomic.Int64
	requests   atomic.Int64
}

func newServer(t *testing.T) *server {
	s := &server{}
	s.status.Store(200)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		now := time.Now().UnixNano()
		if from, until := s.stallFrom.Load(), s.stallUntil.Load(); now >= from && now < until {
			select {
			case <-time.After(time.Duration(until - now)):
			case <-r.Context().Done():
				return
			}
		}
		if dl := s.delay.Load(); dl > 0 {
			select {
			case <-time.After(time.Duration(dl)):
			case <-r.Context().Done():
				return
			}
		}
		w.WriteHeader(int(s.status.Load()))
	}))
	t.Cleanup(s.Close)
	return s
}

func httpPool(target string, rps []config.ScheduleSpec, instances int) config.Pool {
	return config.Pool{
		ID:        "p",
		Gun:       config.GunSpec{Type: "http", Target: target},
		Ammo:      ammo.Spec{Type: "inline", Requests: []ammo.Ammo{{URI: "/"}}},
		RPS:       rps,
		Instances: instances,
	}
}

func run(t *testing.T, spec *config.Spec, opts Options) *Result {
	t.Helper()
	res, err := Run(context.Background(), spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestCoordinatedOmission stalls the server for one second in the middle
// of a constant-rate run. Service time hardly notices (only the requests in
// flight during the stall are slow), but every shot scheduled during the
// stall waits for it, and the corrected latency says so.
func TestCoordinatedOmission(t *testing.T) {
	srv := newServer(t)
	spec := &config.Spec{Pools: []config.Pool{httpPool(srv.URL, []config.ScheduleSpec{{Type: "const", Ops: 100, Duration: d(3 * time.Second)}}, 4)}}
	// Stall from 1s to 2s into the run.
	now := time.Now()
	srv.stallFrom.Store(now.Add(time.Second).UnixNano())
	srv.stallUntil.Store(now.Add(2 * time.Second).UnixNano())
	res := run(t, spec, Options{})
	tot := res.Total
	if tot.Count != 300 || tot.Errors != 0 {
		t.Fatalf("count %d errors %d, want 300 and 0", tot.Count, tot.Errors)
	}
	// About 100 of 300 shots were due during the stall and waited for its
	// end: on average half a second. Corrected p50 stays small, p90 is
	// hundreds of milliseconds, p99 close to the whole second.
	if p90 := tot.Latency.Quantile(90); p90 < 300*time.Millisecond {
		t.Errorf("corrected p90 %s: the stall is hidden", p90)
	}
	if p99 := tot.Latency.Quantile(99); p99 < 800*time.Millisecond {
		t.Errorf("corrected p99 %s: the stall is hidden", p99)
	}
	// Only the 4 instances' requests in flight at the stall were slow to
	// serve: under 2% of the shots.
	if s95 := tot.Service.Quantile(95); s95 > 300*time.Millisecond {
		t.Errorf("service p95 %s: only the stalled requests should be slow", s95)
	}
	if res.Total.Overdue < 90 {
		t.Errorf("overdue %d, want about 100", res.Total.Overdue)
	}
	if res.Stop != StopDone || !res.Verdict.Passed {
		t.Fatalf("stop %s verdict %+v", res.Stop, res.Verdict)
	}
}

// TestAchievedRate checks the rate between the first and the last shot
// against the target, at a moderate rate.
func TestAchievedRate(t *testing.T) {
	for _, timer := range []string{config.TimerPrecise, config.TimerCoarse} {
		t.Run(timer, func(t *testing.T) { testAchievedRate(t, timer) })
	}
}

func testAchievedRate(t *testing.T, timer string) {
	srv := newServer(t)
	spec := &config.Spec{Timer: timer, Pools: []config.Pool{httpPool(srv.URL, []config.ScheduleSpec{{Type: "const", Ops: 400, Duration: d(3 * time.Second)}}, 16)}}
	sink := &captureSink{}
	res := run(t, spec, Options{Sinks: []aggregate.Sink{sink}})
	if res.Total.Count != 1200 || len(sink.samples) != 1200 {
		t.Fatalf("count %d, samples %d, want 1200", res.Total.Count, len(sink.samples))
	}
	sent := make([]float64, len(sink.samples))
	for i, s := range sink.samples {
		sent[i] = float64(s.Sent)
	}
	sort.Float64s(sent)
	// The achieved rate is the inverse slope of a least-squares line
	// through (shot number, send time): a single shot delayed by a busy
	// machine barely moves it, a generator that drifts or falls behind
	// does.
	n := float64(len(sent))
	var sx, sy, sxx, sxy float64
	for i, y := range sent {
		x := float64(i)
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
	}
	slope := (n*sxy - sx*sy) / (n*sxx - sx*sx) // ns per shot
	rate := 1e9 / slope
	if rate < 396 || rate > 404 {
		t.Fatalf("achieved %.2f rps, want 400 ± 1%%", rate)
	}
	if srv.requests.Load() != 1200 {
		t.Fatalf("server saw %d requests", srv.requests.Load())
	}
}

func TestEndsWhenAmmoOrScheduleEnds(t *testing.T) {
	srv := newServer(t)
	long := []config.ScheduleSpec{{Type: "const", Ops: 1000, Duration: d(time.Hour)}}
	cases := []struct {
		name string
		pool func() config.Pool
		want int64
	}{
		{"passes", func() config.Pool {
			p := httpPool(srv.URL, long, 4)
			p.Ammo = ammo.Spec{Type: "inline", Requests: []ammo.Ammo{{URI: "/a"}, {URI: "/b"}, {URI: "/c"}}, Passes: 2}
			return p
		}, 6},
		{"limit", func() config.Pool {
			p := httpPool(srv.URL, long, 4)
			p.Ammo.Limit = 5
			return p
		}, 5},
		{"schedule", func() config.Pool {
			return httpPool(srv.URL, []config.ScheduleSpec{{Type: "once", Times: 7}}, 3)
		}, 7},
	}
	for _, c := range cases {
		before := srv.requests.Load()
		start := time.Now()
		res := run(t, &config.Spec{Pools: []config.Pool{c.pool()}}, Options{})
		if res.Total.Count != c.want || srv.requests.Load()-before != c.want || res.Stop != StopDone {
			t.Errorf("%s: count %d, requests %d, stop %s; want %d, done", c.name, res.Total.Count, srv.requests.Load()-before, res.Stop, c.want)
		}
		if time.Since(start) > 30*time.Second {
			t.Errorf("%s: took %s", c.name, time.Since(start))
		}
	}
}

// TestAmmoEndWakesWaitingInstances: when the ammo runs out, instances
// holding tokens far in the future stop at once instead of sleeping until
// their tokens are due.
func TestAmmoEndWakesWaitingInstances(t *testing.T) {
	srv := newServer(t)
	pool := httpPool(srv.URL, []config.ScheduleSpec{{Type: "const", Ops: 1, Duration: d(time.Hour)}}, 10)
	pool.Ammo.Limit = 2
	start := time.Now()
	res := run(t, &config.Spec{Pools: []config.Pool{pool}}, Options{})
	// Shots at 0s and 1s; the third instance takes the token at 2s and
	// finds no ammo. The others hold tokens up to 9s.
	if res.Total.Count != 2 || res.Stop != StopDone {
		t.Fatalf("count %d stop %s", res.Total.Count, res.Stop)
	}
	if el := time.Since(start); el > 6*time.Second {
		t.Fatalf("run took %s: instances slept until their tokens", el)
	}
}

func TestCancelStopsInFlight(t *testing.T) {
	srv := newServer(t)
	srv.delay.Store(int64(time.Hour))
	spec := &config.Spec{Pools: []config.Pool{httpPool(srv.URL, []config.ScheduleSpec{{Type: "const", Ops: 50, Duration: d(time.Hour)}}, 5)}}
	spec.Pools[0].Gun.Timeout = d(time.Hour)
	e, err := New(context.Background(), spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		deadline := time.Now().Add(20 * time.Second)
		for e.Progress().InFlight < 5 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	res, err := e.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 30*time.Second {
		t.Fatalf("Run took %s after cancel", time.Since(start))
	}
	if res.Stop != StopCanceled || res.Interrupted != 5 || res.Total.Count != 0 {
		t.Fatalf("stop %s interrupted %d count %d; want canceled, 5, 0", res.Stop, res.Interrupted, res.Total.Count)
	}
	if p := e.Progress(); p.InFlight != 0 || p.Instances != 0 {
		t.Fatalf("after Run: %d in flight, %d instances", p.InFlight, p.Instances)
	}
}

func TestDurationCap(t *testing.T) {
	srv := newServer(t)
	spec := &config.Spec{Duration: d(500 * time.Millisecond),
		Pools: []config.Pool{httpPool(srv.URL, []config.ScheduleSpec{{Type: "const", Ops: 100, Duration: d(time.Hour)}}, 4)}}
	res := run(t, spec, Options{})
	// Tokens at 0, 10ms, … 490ms: 50 shots, never more (fewer if the
	// machine is so busy that the duration passes before the last tokens
	// fire).
	if res.Stop != StopDuration || res.Total.Count < 10 || res.Total.Count > 50 {
		t.Fatalf("stop %s count %d; want duration and 50", res.Stop, res.Total.Count)
	}
}

func TestAutostopAndThresholds(t *testing.T) {
	srv := newServer(t)
	srv.delay.Store(int64(150 * time.Millisecond))
	spec := &config.Spec{
		Thresholds: []string{"p99 > 100ms for 1s"},
		Pools:      []config.Pool{httpPool(srv.URL, []config.ScheduleSpec{{Type: "const", Ops: 50, Duration: d(time.Minute)}}, 20)},
	}
	start := time.Now()
	res := run(t, spec, Options{})
	if res.Stop != StopAutostop || res.Verdict.Passed || len(res.Verdict.Failures) != 1 {
		t.Fatalf("stop %s verdict %+v", res.Stop, res.Verdict)
	}
	if time.Since(start) > 30*time.Second {
		t.Fatalf("autostop took %s", time.Since(start))
	}

	srv.delay.Store(0)
	srv.status.Store(500)
	spec = &config.Spec{
		Thresholds: []string{"error_rate > 5%", "p99 > 10s"},
		Pools:      []config.Pool{httpPool(srv.URL, []config.ScheduleSpec{{Type: "once", Times: 20}}, 4)},
	}
	res = run(t, spec, Options{})
	if res.Stop != StopDone || res.Verdict.Passed || len(res.Verdict.Failures) != 1 || res.Codes["http 500"].Count != 20 {
		t.Fatalf("stop %s verdict %+v codes %v", res.Stop, res.Verdict, res.Codes)
	}
}

// TestShares runs two replicas of one spec, each with half the load, and
// merges their results.
func TestShares(t *testing.T) {
	srv := newServer(t)
	spec := &config.Spec{Pools: []config.Pool{httpPool(srv.URL, []config.ScheduleSpec{
		{Type: "once", Times: 7}, {Type: "const", Ops: 100, Duration: d(200 * time.Millisecond)},
	}, 4)}}
	startAt := time.Now().Add(200 * time.Millisecond)
	var wg sync.WaitGroup
	results := make([]*Result, 2)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := Run(context.Background(), spec, Options{Share: schedule.Share{Index: int64(i), Count: 2}, StartAt: startAt})
			if err != nil {
				t.Error(err)
				return
			}
			results[i] = res
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if results[0].Total.Count != 14 || results[1].Total.Count != 13 {
		t.Fatalf("shares got %d and %d shots, want 14 and 13", results[0].Total.Count, results[1].Total.Count)
	}
	merged := &Result{Result: &aggregate.Result{}}
	for _, r := range results {
		b, _ := json.Marshal(r)
		var back Result
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if back.Share.Count != 2 {
			t.Fatalf("share lost in JSON: %+v", back.Share)
		}
		merged.Merge(back.Result)
	}
	if merged.Total.Count != 27 || merged.Total.Latency.Count() != 27 {
		t.Fatalf("merged count %d", merged.Total.Count)
	}
}

func TestDiscardOverflow(t *testing.T) {
	srv := newServer(t)
	srv.delay.Store(int64(50 * time.Millisecond))
	pool := httpPool(srv.URL, []config.ScheduleSpec{{Type: "const", Ops: 100, Duration: d(time.Second)}}, 1)
	pool.DiscardOverflow = true
	res := run(t, &config.Spec{Pools: []config.Pool{pool}}, Options{})
	if res.Discarded == 0 || res.Total.Count+res.Discarded != 100 {
		t.Fatalf("count %d discarded %d, want some discarded and 100 in all", res.Total.Count, res.Discarded)
	}
	// Without discarding every shot is fired, late.
	pool.DiscardOverflow = false
	res = run(t, &config.Spec{Pools: []config.Pool{pool}}, Options{})
	if res.Discarded != 0 || res.Total.Count != 100 || res.Total.Overdue < 50 {
		t.Fatalf("count %d discarded %d overdue %d", res.Total.Count, res.Discarded, res.Total.Overdue)
	}
}

func TestStartupSchedule(t *testing.T) {
	srv := newServer(t)
	srv.delay.Store(int64(20 * time.Millisecond))
	pool := httpPool(srv.URL, []config.ScheduleSpec{{Type: "unlimited", Duration: d(600 * time.Millisecond)}}, 3)
	pool.Startup = []config.ScheduleSpec{{Type: "const", Ops: 5, Duration: d(time.Second)}} // 0, 200ms, 400ms
	var maxInst atomic.Int64
	res := run(t, &config.Spec{Pools: []config.Pool{pool}}, Options{ProgressInterval: 10 * time.Millisecond, Observer: func(p Progress) {
		if p.Instances > maxInst.Load() {
			maxInst.Store(p.Instances)
		}
	}})
	// One instance for 600ms, a second for 400ms, a third for 200ms, each
	// at most 50 shots a second: at most 60 shots, not 90.
	if res.Total.Count > 62 || res.Total.Count < 20 || maxInst.Load() != 3 {
		t.Fatalf("count %d, max instances %d", res.Total.Count, maxInst.Load())
	}
}

func TestNewNamesFields(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ammo.jsonl"), []byte("not json\n"), 0o644)
	good := func() *config.Spec {
		return &config.Spec{Pools: []config.Pool{httpPool("http://127.0.0.1:1", []config.ScheduleSpec{{Type: "once", Times: 1}}, 1)}}
	}
	cases := []struct {
		mut   func(*config.Spec)
		opts  Options
		field string
	}{
		{func(s *config.Spec) { s.Pools[0].Gun.Type = "laser" }, Options{}, "pools[0].gun.type"},
		{func(s *config.Spec) { s.Pools[0].Gun.Target = "nope" }, Options{}, "pools[0].gun.target"},
		{func(s *config.Spec) { s.Pools[0].Ammo = ammo.Spec{Type: "file", File: "missing"} }, Options{Dir: dir}, "pools[0].ammo.file"},
		{func(s *config.Spec) { s.Pools[0].Ammo = ammo.Spec{Type: "file", File: "ammo.jsonl"} }, Options{Dir: dir}, "pools[0].ammo.file.line 1"},
		{func(s *config.Spec) { s.Pools[0].Instances = 0 }, Options{}, "pools[0].instances"},
		{func(s *config.Spec) {}, Options{Share: schedule.Share{Index: 2, Count: 2}}, "share.index"},
	}
	for i, c := range cases {
		s := good()
		c.mut(s)
		_, err := New(context.Background(), s, c.opts)
		if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != c.field {
			t.Errorf("case %d: err %v, want InvalidArgument on %q", i, err, c.field)
		}
	}
}

// nopGun answers at once.
type nopGun struct{}

func (nopGun) Shoot(_ context.Context, s *gun.Shot) { s.Code, s.Proto = 200, aggregate.HTTP }
func (nopGun) Close() error                         { return nil }

type nopFactory struct{}

func (nopFactory) New(context.Context, gun.Env) (gun.Gun, error) { return nopGun{}, nil }
func (nopFactory) Close() error                                  { return nil }

func nopRegistry() *gun.Registry {
	r := gun.NewRegistry()
	r.Register("nop", func(context.Context, *config.GunSpec, files.FS) (gun.Factory, error) { return nopFactory{}, nil })
	return r
}

// TestEngineAllocations counts the engine's own allocations per shot with
// a gun that allocates nothing.
func TestEngineAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	spec := &config.Spec{Pools: []config.Pool{{
		ID: "nop", Gun: config.GunSpec{Type: "nop"}, Instances: 4,
		Ammo: ammo.Spec{Type: "inline", Requests: []ammo.Ammo{{URI: "/"}}},
		RPS:  []config.ScheduleSpec{{Type: "once", Times: 200000}},
	}}}
	e, err := New(context.Background(), spec, Options{Registry: nopRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res, err := e.Run(context.Background())
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	shots := res.Total.Count + res.Dropped
	if shots != 200000 {
		t.Fatalf("%d shots", shots)
	}
	perShot := float64(after.Mallocs-before.Mallocs) / float64(shots)
	if perShot > 0.1 {
		t.Fatalf("%.3f allocations per shot", perShot)
	}
}
