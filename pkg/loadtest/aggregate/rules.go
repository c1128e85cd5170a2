package aggregate

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
)

// Rule is a failure condition on a run: a threshold, or with a window
// (For) an autostop.
//
// The syntax is "METRIC OP VALUE [for DURATION]", for example
// "p99 > 200ms for 10s" or "error_rate > 5%". Metrics:
//
//   - pN (p50, p99, p99.9, …), mean, max: corrected latency; VALUE is a
//     duration.
//   - service_pN, service_mean, service_max: service time.
//   - error_rate: failed/all; VALUE is a percentage ("5%") or a fraction.
//   - errors: the number of failed shots.
//   - rps: completed shots per second.
//
// OP is one of > >= < <=. A rule without a window is evaluated on the
// whole run at its end and decides the verdict. A rule with a window is
// evaluated on each second of the run and stops it, failed, as soon as it
// has held for every second of the window; seconds without any completed
// shot only satisfy rps and errors rules.
type Rule struct {
	// Text is the rule as written.
	Text string
	// Metric is the metric's name.
	Metric string
	// Op is the comparison.
	Op string
	// Threshold is the value compared against, in the metric's unit
	// (nanoseconds for durations, a fraction for rates).
	Threshold float64
	// For is the autostop window; 0 for a whole-run threshold.
	For time.Duration

	quantile float64 // for pN metrics
}

// Violation is a rule that failed, with the observed value.
type Violation struct {
	// Rule is the failed rule.
	Rule Rule
	// Value is the observed value in the metric's unit.
	Value float64
	// At is the run time at which it failed (the end, for thresholds).
	At time.Duration
}

// String describes the violation, for example
// `"p99 > 200ms for 10s": observed 350ms at 14s`.
func (v Violation) String() string {
	return fmt.Sprintf("%q: observed %s at %s", v.Rule.Text, v.Rule.format(v.Value), v.At.Round(time.Second))
}

func (r Rule) format(v float64) string {
	switch {
	case r.isDuration():
		return time.Duration(v).Round(time.Microsecond).String()
	case r.Metric == "error_rate":
		return strconv.FormatFloat(v*100, 'f', 2, 64) + "%"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func (r Rule) isDuration() bool {
	switch r.Metric {
	case "mean", "max", "service_mean", "service_max":
		return true
	}
	return r.quantile > 0
}

// ParseRule parses the rule syntax described on Rule.
func ParseRule(text string) (Rule, error) {
	norm := strings.TrimSpace(text)
	norm = strings.Replace(norm, "error rate", "error_rate", 1)
	f := strings.Fields(norm)
	if len(f) != 3 && !(len(f) == 5 && f[3] == "for") {
		return Rule{}, errs.New(errs.InvalidArgument, "rule %q: want \"METRIC OP VALUE [for DURATION]\"", text)
	}
	r := Rule{Text: text, Metric: f[0], Op: f[1]}
	switch r.Op {
	case ">", ">=", "<", "<=":
	default:
		return Rule{}, errs.New(errs.InvalidArgument, "rule %q: unknown operator %q (want > >= < <=)", text, r.Op)
	}
	m := r.Metric
	m = strings.TrimPrefix(m, "service_")
	if strings.HasPrefix(m, "p") {
		q, err := strconv.ParseFloat(m[1:], 64)
		if err != nil || q <= 0 || q > 100 {
			return Rule{}, errs.New(errs.InvalidArgument, "rule %q: bad quantile %q", text, r.Metric)
		}
		r.quantile = q
	} else {
		switch r.Metric {
		case "mean", "max", "service_mean", "service_max", "error_rate", "errors", "rps":
		default:
			return Rule{}, errs.New(errs.InvalidArgument, "rule %q: unknown metric %q", text, r.Metric)
		}
	}
	val := f[2]
	switch {
	case r.isDuration():
		d, err := time.ParseDuration(val)
		if err != nil {
			return Rule{}, errs.New(errs.InvalidArgument, "rule %q: value %q is not a duration", text, val)
		}
		r.Threshold = float64(d)
	case r.Metric == "error_rate":
		pct := strings.HasSuffix(val, "%")
		x, err := strconv.ParseFloat(strings.TrimSuffix(val, "%"), 64)
		if err != nil || x < 0 {
			return Rule{}, errs.New(errs.InvalidArgument, "rule %q: value %q is not a rate", text, val)
		}
		if pct {
			x /= 100
		}
		r.Threshold = x
	default:
		x, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return Rule{}, errs.New(errs.InvalidArgument, "rule %q: value %q is not a number", text, val)
		}
		r.Threshold = x
	}
	if len(f) == 5 {
		d, err := time.ParseDuration(f[4])
		if err != nil || d < time.Second {
			return Rule{}, errs.New(errs.InvalidArgument, "rule %q: window %q must be a duration of at least 1s", text, f[4])
		}
		r.For = d
	}
	return r, nil
}

// value returns the rule's metric over st covering seconds of run time, and
// false when the metric is undefined (latency of no samples).
func (r Rule) value(st *Stats, seconds float64) (float64, bool) {
	service := strings.HasPrefix(r.Metric, "service_")
	h := st.Latency
	if service {
		h = st.Service
	}
	switch {
	case r.Metric == "errors":
		return float64(st.Errors), true
	case r.Metric == "rps":
		if seconds <= 0 {
			return 0, false
		}
		return float64(st.Count) / seconds, true
	case r.Metric == "error_rate":
		if st.Count == 0 {
			return 0, false
		}
		return st.ErrorRate(), true
	}
	if h == nil || h.Count() == 0 {
		return 0, false
	}
	switch {
	case r.quantile > 0:
		return float64(h.Quantile(r.quantile)), true
	case strings.HasSuffix(r.Metric, "mean"):
		return float64(h.Mean()), true
	default:
		return float64(h.Max()), true
	}
}

func (r Rule) holds(v float64) bool {
	switch r.Op {
	case ">":
		return v > r.Threshold
	case ">=":
		return v >= r.Threshold
	case "<":
		return v < r.Threshold
	default:
		return v <= r.Threshold
	}
}

// Verdict is the judgement of a run against its rules.
type Verdict struct {
	// Passed is true when no rule failed and the run was not stopped.
	Passed bool `json:"passed"`
	// Failures describe the failed rules.
	Failures []string `json:"failures,omitempty"`
}

// Judge evaluates the whole-run rules on r and adds stop, the violation
// that stopped the run early, if any.
func Judge(r *Result, rules []Rule, stop *Violation) Verdict {
	v := Verdict{Passed: true}
	if stop != nil {
		v.Passed = false
		v.Failures = append(v.Failures, "stopped: "+stop.String())
	}
	for _, rule := range rules {
		if rule.For > 0 {
			continue
		}
		val, ok := rule.value(r.Total, r.Elapsed)
		if ok && rule.holds(val) {
			v.Passed = false
			viol := Violation{Rule: rule, Value: val, At: time.Duration(r.Elapsed * float64(time.Second))}
			v.Failures = append(v.Failures, viol.String())
		}
	}
	return v
}
