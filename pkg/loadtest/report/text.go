package report

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/engine"
)

// ms formats a duration in milliseconds with three significant digits.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0fms", v)
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	default:
		return fmt.Sprintf("%.2fms", v)
	}
}

// ProgressLine renders a live progress line: elapsed time, target and
// achieved RPS, shots in flight, corrected p50/p99 so far and errors.
func ProgressLine(p engine.Progress) string {
	rate := 0.0
	if p.Count > 0 {
		rate = float64(p.Errors) / float64(p.Count) * 100
	}
	s := fmt.Sprintf("%6s  rps %.0f/%.0f  inflight %d  p50 %s  p99 %s  errors %d (%.2f%%)",
		p.Elapsed.Truncate(time.Second), p.RPS, p.TargetRPS, p.InFlight, ms(p.P50), ms(p.P99), p.Errors, rate)
	if p.Dropped > 0 {
		s += fmt.Sprintf("  dropped %d", p.Dropped)
	}
	if p.Discarded > 0 {
		s += fmt.Sprintf("  discarded %d", p.Discarded)
	}
	return s
}

// WriteSummary writes the final summary: why the run stopped, the verdict,
// and tables of latency (corrected and service time) overall, per tag and
// per result code.
func WriteSummary(w io.Writer, r *engine.Result) error {
	res := r.Result
	var b strings.Builder
	fmt.Fprintf(&b, "stopped: %s after %.1fs; %d shots, %.1f rps", r.Stop, res.Elapsed, res.Total.Count, res.RPS())
	if r.Share.Count > 1 {
		fmt.Fprintf(&b, " (share %d of %d)", r.Share.Index, r.Share.Count)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "schedule lateness: p50 %s, p99 %s, max %s; overdue %d, discarded %d, dropped samples %d, interrupted %d\n\n",
		ms(res.Lateness.Quantile(50)), ms(res.Lateness.Quantile(99)), ms(res.Lateness.Max()),
		res.Total.Overdue, res.Discarded, res.Dropped, r.Interrupted)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "group\tcount\terrors\tp50\tp90\tp99\tp99.9\tmax\tservice p50\tservice p99\t")
	row := func(name string, st *aggregate.Stats) {
		l, s := st.Latency, st.Service
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, st.Count, st.Errors,
			ms(l.Quantile(50)), ms(l.Quantile(90)), ms(l.Quantile(99)), ms(l.Quantile(99.9)), ms(l.Max()),
			ms(s.Quantile(50)), ms(s.Quantile(99)))
	}
	row("total", res.Total)
	for _, k := range sortedKeys(res.Tags) {
		row("tag "+orDash(k), res.Tags[k])
	}
	for _, k := range sortedKeys(res.Codes) {
		row(k, res.Codes[k])
	}
	tw.Flush()
	b.WriteString("\n")
	if r.Verdict.Passed {
		b.WriteString("verdict: PASSED\n")
	} else {
		b.WriteString("verdict: FAILED\n")
		for _, f := range r.Verdict.Failures {
			fmt.Fprintf(&b, "  - %s\n", f)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// WriteJSON writes the result as indented JSON. Its histograms carry the
// lossless HdrHistogram encoding, so results of replicas can be merged.
func WriteJSON(w io.Writer, r *engine.Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
