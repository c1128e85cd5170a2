package resource

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
	"github.com/capstanhq/capstan/pkg/loadtest/engine"
)

// fakeResult is a result with n samples drawn around mean, in tags and
// codes, as an engine would produce.
func fakeResult(rng *rand.Rand, n int, mean time.Duration, start time.Time, elapsed float64, errEvery int) *aggregate.Result {
	r := aggregate.NewResult(start)
	r.Elapsed = elapsed
	ok, bad := &aggregate.Stats{Latency: aggregate.NewHistogram(), Service: aggregate.NewHistogram()},
		&aggregate.Stats{Latency: aggregate.NewHistogram(), Service: aggregate.NewHistogram()}
	for i := 0; i < n; i++ {
		lat := int64(float64(mean) * rng.ExpFloat64())
		svc := lat / 2
		r.Total.Count++
		r.Total.Latency.Record(lat)
		r.Total.Service.Record(svc)
		r.Lateness.Record(lat - svc)
		st := ok
		if errEvery > 0 && i%errEvery == 0 {
			st = bad
			r.Total.Errors++
			r.Classes["status"]++
		} else {
			r.Classes["ok"]++
		}
		st.Count++
		st.Latency.Record(lat)
		st.Service.Record(svc)
	}
	bad.Errors = bad.Count
	r.Codes["http 200"], r.Codes["http 500"] = ok, bad
	r.Tags["t"] = &aggregate.Stats{Count: r.Total.Count, Errors: r.Total.Errors, Latency: r.Total.Latency.Clone(), Service: r.Total.Service.Clone()}
	r.Timeline = []*aggregate.Second{{At: 0, Count: int64(n)}}
	return r
}

// TestJudgeMergesLosslessly stores parts' results the way runners do and
// checks the merged numbers against the union of all samples.
func TestJudgeMergesLosslessly(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	var outcomes []partOutcome
	union, unionService := aggregate.NewHistogram(), aggregate.NewHistogram()
	var total, errors int64
	for i, mean := range []time.Duration{2 * time.Millisecond, 20 * time.Millisecond, 200 * time.Millisecond} {
		r := fakeResult(rng, 1000*(i+1), mean, start.Add(time.Duration(i)*time.Millisecond), 10+float64(i), 10)
		union.Merge(r.Total.Latency)
		unionService.Merge(r.Total.Service)
		total += r.Total.Count
		errors += r.Total.Errors
		enc, err := encodePartResult(r)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(enc), "timeline") {
			t.Errorf("a part stores its timeline")
		}
		back, err := decodePartResult(enc)
		if err != nil {
			t.Fatal(err)
		}
		outcomes = append(outcomes, partOutcome{index: int64(i), result: back, stop: engine.StopDone, interrupted: int64(i)})
	}
	spec := &config.Spec{Thresholds: []string{"error_rate > 5%", "p99 > 1h"}}
	res, v, err := judge(spec, outcomes)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != total || res.Errors != errors || res.Interrupted != 3 || res.Stop != engine.StopDone {
		t.Fatalf("requests %d errors %d interrupted %d stop %q", res.Requests, res.Errors, res.Interrupted, res.Stop)
	}
	if res.Latency != quantiles(union) || res.ServiceTime != quantiles(unionService) {
		t.Errorf("latency %+v\nunion   %+v", res.Latency, quantiles(union))
	}
	h, err := aggregate.DecodeHistogram(res.Histograms.Latency)
	if err != nil || h.Count() != union.Count() || h.Quantile(99.99) != union.Quantile(99.99) {
		t.Errorf("stored histogram: %v", err)
	}
	if res.Elapsed.D() != 12*time.Second || res.RPS != float64(total)/12 {
		t.Errorf("elapsed %s rps %f", res.Elapsed.D(), res.RPS)
	}
	if res.Codes["http 500"] != errors || res.ErrorsByClass["status"] != errors || res.Tags["t"].Requests != total {
		t.Errorf("codes %v classes %v tags %v", res.Codes, res.ErrorsByClass, res.Tags)
	}
	// 10% errors: the error rate threshold fails, the latency one holds.
	if v.Passed || len(v.Failures) != 1 || !strings.Contains(v.Failures[0], "error_rate") {
		t.Errorf("verdict %+v", v)
	}
	// An autostop in one part fails the verdict and says where.
	outcomes[1].stop = engine.StopAutostop
	outcomes[1].failures = []string{`stopped: "p99 > 1ms for 1s": observed 2ms at 3s`, `"error_rate > 5%": observed 10%`}
	_, v, _ = judge(spec, outcomes)
	if v.Passed || len(v.Failures) != 2 || v.Failures[0] != `stopped: "p99 > 1ms for 1s": observed 2ms at 3s (part 1)` {
		t.Errorf("verdict %+v", v)
	}
	// Parts without results give no results.
	if res, v, err := judge(spec, []partOutcome{{index: 0}}); res != nil || v != nil || err != nil {
		t.Errorf("no results: %v %v %v", res, v, err)
	}
}

// TestPartsDropTagsBeyondTheLimit keeps a part's result bounded.
func TestPartsDropTagsBeyondTheLimit(t *testing.T) {
	r := fakeResult(rand.New(rand.NewPCG(3, 4)), 10, time.Millisecond, time.Now(), 1, 0)
	for i := 0; i <= MaxTags; i++ {
		r.Tags[fmt.Sprint("tag", i)] = &aggregate.Stats{Count: 1, Latency: aggregate.NewHistogram(), Service: aggregate.NewHistogram()}
	}
	enc, err := encodePartResult(r)
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodePartResult(enc)
	if err != nil || len(back.Tags) != 0 || back.Total.Count != 10 {
		t.Fatalf("%v: %d tags, %d shots", err, len(back.Tags), back.Total.Count)
	}
	if len(r.Tags) != MaxTags+2 || len(r.Timeline) != 1 {
		t.Errorf("encoding changed its input")
	}
	if _, err := decodePartResult([]byte(`{"total":{"count":1}}`)); err == nil {
		t.Errorf("a result without histograms decoded")
	}
	res, err := summarize(r, "", 0)
	if err != nil || len(res.Tags) != MaxTags || res.TagsOmitted != 2 {
		t.Errorf("%v: %d tags, %d omitted", err, len(res.Tags), res.TagsOmitted)
	}
}

func TestPickSpreadsAndPartNamesFit(t *testing.T) {
	live := []string{"m-c", "m-a", "m-b"}
	seen := map[string]int{}
	for i := 0; i < 30; i++ {
		got := pick(live, 2, fmt.Sprint("uid-", i))
		if len(got) != 2 || got[0] == got[1] {
			t.Fatalf("pick %v", got)
		}
		seen[got[0]]++
	}
	if len(seen) != 3 {
		t.Errorf("the first part always lands on the same members: %v", seen)
	}
	if got := pick(live, 3, "x"); len(map[string]bool{got[0]: true, got[1]: true, got[2]: true}) != 3 {
		t.Errorf("pick 3 of 3: %v", got)
	}
	if got := partName("smoke", 3); got != "smoke-3" {
		t.Errorf("partName %q", got)
	}
	long := strings.Repeat("a", 250)
	a, b := partName(long, 12), partName(long[:249]+"b", 12)
	if len(a) > 253 || a == b || !strings.HasSuffix(a, "-12") {
		t.Errorf("long names: %q %q", a, b)
	}
}
