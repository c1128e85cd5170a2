package resource

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
	"github.com/capstanhq/capstan/pkg/loadtest/engine"
)

// dur rounds d to the histograms' microsecond resolution.
func dur(d time.Duration) config.Duration { return config.Duration(d.Round(time.Microsecond)) }

// quantiles summarizes h.
func quantiles(h *aggregate.Histogram) Quantiles {
	if h == nil || h.Count() == 0 {
		return Quantiles{}
	}
	return Quantiles{
		P50: dur(h.Quantile(50)), P90: dur(h.Quantile(90)), P99: dur(h.Quantile(99)),
		P999: dur(h.Quantile(99.9)), Max: dur(h.Max()), Mean: dur(h.Mean()),
	}
}

// finite replaces NaN and infinities (which JSON cannot hold) by 0.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}

// progressOf converts the engine's progress.
func progressOf(p engine.Progress, now time.Time) *Progress {
	return &Progress{
		UpdateTime: now, Elapsed: config.Duration(p.Elapsed.Round(time.Millisecond)),
		TargetRPS: finite(p.TargetRPS), RPS: finite(p.RPS), InFlight: p.InFlight, Instances: p.Instances,
		Requests: p.Count, Errors: p.Errors, P50: dur(p.P50), P99: dur(p.P99),
		Dropped: p.Dropped, Discarded: p.Discarded,
	}
}

// sumProgress combines the parts' progress: counts and rates add up,
// elapsed time and quantiles are the parts' highest.
func sumProgress(ps []*Progress) *Progress {
	var out *Progress
	for _, p := range ps {
		if p == nil {
			continue
		}
		if out == nil {
			out = &Progress{}
		}
		if p.UpdateTime.After(out.UpdateTime) {
			out.UpdateTime = p.UpdateTime
		}
		out.Elapsed = max(out.Elapsed, p.Elapsed)
		out.TargetRPS += p.TargetRPS
		out.RPS += p.RPS
		out.InFlight += p.InFlight
		out.Instances += p.Instances
		out.Requests += p.Requests
		out.Errors += p.Errors
		out.P50 = max(out.P50, p.P50)
		out.P99 = max(out.P99, p.P99)
		out.Dropped += p.Dropped
		out.Discarded += p.Discarded
	}
	return out
}

// encodePartResult is the JSON of r as a part stores it: without the
// timeline, and without per-tag numbers when there are more than MaxTags
// tags (they would make the part too large to store).
func encodePartResult(r *aggregate.Result) (json.RawMessage, error) {
	c := *r
	c.Timeline = nil
	if len(c.Tags) > MaxTags {
		c.Tags = nil
	}
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "encoding the part's result")
	}
	return b, nil
}

// decodePartResult decodes a part's stored result.
func decodePartResult(b json.RawMessage) (*aggregate.Result, error) {
	r := &aggregate.Result{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, errs.Wrap(errs.InvalidArgument, err, "decoding a part's result")
	}
	if r.Total == nil || r.Total.Latency == nil || r.Total.Service == nil || r.Lateness == nil {
		return nil, errs.New(errs.InvalidArgument, "a part's result lacks its histograms")
	}
	return r, nil
}

// mergeResults merges results losslessly (aggregate.Result.Merge) into a
// fresh result, never into one of its inputs.
func mergeResults(rs []*aggregate.Result) *aggregate.Result {
	out := aggregate.NewResult(time.Time{})
	for _, r := range rs {
		out.Merge(r)
	}
	return out
}

// stopRank orders stop reasons for reporting one across parts: an
// autostop explains most, then a cancel, then the duration.
var stopRank = map[string]int{engine.StopAutostop: 4, engine.StopCanceled: 3, engine.StopDuration: 2, engine.StopDone: 1}

// summarize turns a (merged) result into the status's results.
func summarize(r *aggregate.Result, stop string, interrupted int64) (*Results, error) {
	out := &Results{
		Stop: stop, Elapsed: config.Duration(time.Duration(r.Elapsed * float64(time.Second)).Round(time.Millisecond)),
		Requests: r.Total.Count, Errors: r.Total.Errors, RPS: math.Round(finite(r.RPS())*100) / 100,
		Latency: quantiles(r.Total.Latency), ServiceTime: quantiles(r.Total.Service), Lateness: quantiles(r.Lateness),
		Overdue: r.Total.Overdue, Discarded: r.Discarded, Dropped: r.Dropped, Interrupted: interrupted,
		BytesOut: r.Total.BytesOut, BytesIn: r.Total.BytesIn,
	}
	for class, n := range r.Classes {
		if class != aggregate.OK.String() && n > 0 {
			if out.ErrorsByClass == nil {
				out.ErrorsByClass = map[string]int64{}
			}
			out.ErrorsByClass[class] = n
		}
	}
	for code, st := range r.Codes {
		if out.Codes == nil {
			out.Codes = map[string]int64{}
		}
		out.Codes[code] = st.Count
	}
	tags := make([]string, 0, len(r.Tags))
	for t := range r.Tags {
		tags = append(tags, t)
	}
	sort.Strings(tags)
	for i, t := range tags {
		if i == MaxTags {
			out.TagsOmitted = len(tags) - MaxTags
			break
		}
		st := r.Tags[t]
		if out.Tags == nil {
			out.Tags = map[string]TagResults{}
		}
		tr := TagResults{Requests: st.Count, Errors: st.Errors}
		if st.Latency != nil && st.Latency.Count() > 0 {
			tr.P50, tr.P99 = dur(st.Latency.Quantile(50)), dur(st.Latency.Quantile(99))
		}
		out.Tags[t] = tr
	}
	var err error
	if out.Histograms.Latency, err = r.Total.Latency.Encode(); err != nil {
		return nil, err
	}
	if out.Histograms.Service, err = r.Total.Service.Encode(); err != nil {
		return nil, err
	}
	return out, nil
}

// partOutcome is what one part contributed to the merged outcome.
type partOutcome struct {
	index       int64
	result      *aggregate.Result // nil if the part produced none
	stop        string
	interrupted int64
	failures    []string
}

// judge merges the parts' results and judges them: whole-run thresholds
// on the merged result, plus the autostop violations parts reported.
func judge(spec *config.Spec, parts []partOutcome) (*Results, *aggregate.Verdict, error) {
	var rs []*aggregate.Result
	stop := ""
	var interrupted int64
	var stopped []string
	for _, p := range parts {
		if p.result != nil {
			rs = append(rs, p.result)
		}
		if stopRank[p.stop] > stopRank[stop] {
			stop = p.stop
		}
		interrupted += p.interrupted
		for _, f := range p.failures {
			if strings.HasPrefix(f, "stopped: ") {
				if len(parts) > 1 {
					f = fmt.Sprintf("%s (part %d)", f, p.index)
				}
				stopped = append(stopped, f)
			}
		}
	}
	if len(rs) == 0 {
		return nil, nil, nil
	}
	merged := mergeResults(rs)
	res, err := summarize(merged, stop, interrupted)
	if err != nil {
		return nil, nil, err
	}
	rules, err := spec.Rules()
	if err != nil {
		return nil, nil, errs.WithField(err, "spec")
	}
	v := aggregate.Judge(merged, rules, nil)
	if len(stopped) > 0 {
		v.Passed = false
		v.Failures = append(stopped, v.Failures...)
	}
	return res, &v, nil
}
