package report

import (
	"bytes"
	"fmt"
	"html/template"
	"image/color"
	"io"
	"math"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/engine"
)

var palette = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
}

// svg renders p as an SVG document.
func svg(p *plot.Plot, w, h vg.Length) (template.HTML, error) {
	c := vgsvg.New(w, h)
	p.Draw(draw.New(c))
	var b bytes.Buffer
	if _, err := c.WriteTo(&b); err != nil {
		return "", err
	}
	s := b.String()
	// Drop the XML prolog: the SVG is inlined into HTML.
	if i := strings.Index(s, "<svg"); i > 0 {
		s = s[i:]
	}
	return template.HTML(s), nil
}

func addLine(p *plot.Plot, name string, pts plotter.XYs, i int) error {
	l, err := plotter.NewLine(pts)
	if err != nil {
		return err
	}
	l.Color = palette[i%len(palette)]
	l.Width = vg.Points(1.5)
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

// latencyOverTime charts the per-second corrected latency quantiles.
func latencyOverTime(res *aggregate.Result) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Latency over time (from intended time)"
	p.X.Label.Text = "seconds"
	p.Y.Label.Text = "milliseconds"
	p.Y.Min = 0
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	series := []struct {
		name string
		get  func(*aggregate.Second) float64
	}{
		{"p50", func(s *aggregate.Second) float64 { return s.P50 }},
		{"p90", func(s *aggregate.Second) float64 { return s.P90 }},
		{"p99", func(s *aggregate.Second) float64 { return s.P99 }},
		{"max", func(s *aggregate.Second) float64 { return s.Max }},
	}
	for i, sr := range series {
		pts := make(plotter.XYs, 0, len(res.Timeline))
		for _, s := range res.Timeline {
			if s.Count > 0 {
				pts = append(pts, plotter.XY{X: float64(s.At), Y: sr.get(s)})
			}
		}
		if len(pts) == 0 {
			continue
		}
		if err := addLine(p, sr.name, pts, i); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// rateOverTime charts completed shots and errors per second.
func rateOverTime(res *aggregate.Result) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Responses per second"
	p.X.Label.Text = "seconds"
	p.Y.Label.Text = "per second"
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	ok := make(plotter.XYs, 0, len(res.Timeline))
	bad := make(plotter.XYs, 0, len(res.Timeline))
	for _, s := range res.Timeline {
		ok = append(ok, plotter.XY{X: float64(s.At), Y: float64(s.Count)})
		bad = append(bad, plotter.XY{X: float64(s.At), Y: float64(s.Errors)})
	}
	if len(ok) == 0 {
		return p, nil
	}
	if err := addLine(p, "responses", ok, 0); err != nil {
		return nil, err
	}
	if err := addLine(p, "errors", bad, 2); err != nil {
		return nil, err
	}
	return p, nil
}

// spectrum quantiles: X is -log10(1-q), so 90%, 99%, 99.9% are evenly
// spaced, as in HdrHistogram's percentile plots.
var spectrumQ = func() []float64 {
	var qs []float64
	for x := 0.0; x <= 5.0001; x += 0.05 {
		qs = append(qs, 100*(1-math.Pow(10, -x)))
	}
	return qs
}()

// distribution charts the latency percentile spectrum of corrected latency
// and service time.
func distribution(res *aggregate.Result) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Latency distribution"
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "milliseconds"
	p.Y.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	var ticks []plot.Tick
	for i, label := range []string{"0%", "90%", "99%", "99.9%", "99.99%", "99.999%"} {
		ticks = append(ticks, plot.Tick{Value: float64(i), Label: label})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	for i, h := range []struct {
		name string
		h    *aggregate.Histogram
	}{{"latency (from intended time)", res.Total.Latency}, {"service time", res.Total.Service}} {
		if h.h.Count() == 0 {
			continue
		}
		n := h.h.Count()
		pts := make(plotter.XYs, 0, len(spectrumQ))
		for _, q := range spectrumQ {
			x := -math.Log10(1 - q/100)
			// Stop where the quantile exceeds what the sample count can
			// resolve.
			if 1-q/100 < 1/float64(n) {
				break
			}
			pts = append(pts, plotter.XY{X: x, Y: float64(h.h.Quantile(q)) / float64(time.Millisecond)})
		}
		if len(pts) < 2 {
			continue
		}
		if err := addLine(p, h.name, pts, i); err != nil {
			return nil, err
		}
	}
	return p, nil
}

type htmlRow struct {
	Name                                             string
	Count, Errors                                    int64
	P50, P90, P99, P999, Max, ServiceP50, ServiceP99 string
}

var page = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Capstan load test {{.Start}}</title>
<style>
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 0.3em 0.8em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.passed { color: #2c7a2c; } .failed { color: #c62828; }
figure { margin: 1em 0; }
</style></head><body>
<h1>Load test of {{.Start}}</h1>
<p>Stopped: <b>{{.Stop}}</b> after {{printf "%.1f" .Elapsed}}s; {{.Count}} shots at {{printf "%.1f" .RPS}} rps.
Schedule lateness p50 {{.LateP50}}, p99 {{.LateP99}}; overdue {{.Overdue}}, discarded {{.Discarded}}, dropped samples {{.Dropped}}, interrupted {{.Interrupted}}.</p>
{{if .Passed}}<p class="passed"><b>Verdict: PASSED</b></p>{{else}}<p class="failed"><b>Verdict: FAILED</b></p>
<ul>{{range .Failures}}<li>{{.}}</li>{{end}}</ul>{{end}}
<table><tr><th>group</th><th>count</th><th>errors</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>service p50</th><th>service p99</th></tr>
{{range .Rows}}<tr><td>{{.Name}}</td><td>{{.Count}}</td><td>{{.Errors}}</td><td>{{.P50}}</td><td>{{.P90}}</td><td>{{.P99}}</td><td>{{.P999}}</td><td>{{.Max}}</td><td>{{.ServiceP50}}</td><td>{{.ServiceP99}}</td></tr>
{{end}}</table>
<p>Latency is measured from each shot's intended time, so it includes the time a shot waited for the generator or an overloaded server (corrected for coordinated omission); service time is measured from the moment the request was sent.</p>
{{range .Charts}}<figure>{{.}}</figure>
{{end}}
</body></html>
`))

// WriteHTML writes a self-contained HTML report: verdict, summary table,
// and SVG charts of latency over time, responses per second and the
// latency distribution.
func WriteHTML(w io.Writer, r *engine.Result) error {
	res := r.Result
	data := struct {
		Start, Stop, LateP50, LateP99                   string
		Elapsed, RPS                                    float64
		Count, Overdue, Discarded, Dropped, Interrupted int64
		Passed                                          bool
		Failures                                        []string
		Rows                                            []htmlRow
		Charts                                          []template.HTML
	}{
		Start: res.Start.Format(time.RFC3339), Stop: r.Stop, Elapsed: res.Elapsed, RPS: res.RPS(),
		Count: res.Total.Count, Overdue: res.Total.Overdue, Discarded: res.Discarded, Dropped: res.Dropped,
		Interrupted: r.Interrupted, Passed: r.Verdict.Passed, Failures: r.Verdict.Failures,
		LateP50: ms(res.Lateness.Quantile(50)), LateP99: ms(res.Lateness.Quantile(99)),
	}
	row := func(name string, st *aggregate.Stats) {
		l, s := st.Latency, st.Service
		data.Rows = append(data.Rows, htmlRow{Name: name, Count: st.Count, Errors: st.Errors,
			P50: ms(l.Quantile(50)), P90: ms(l.Quantile(90)), P99: ms(l.Quantile(99)), P999: ms(l.Quantile(99.9)),
			Max: ms(l.Max()), ServiceP50: ms(s.Quantile(50)), ServiceP99: ms(s.Quantile(99))})
	}
	row("total", res.Total)
	for _, k := range sortedKeys(res.Tags) {
		row("tag "+orDash(k), res.Tags[k])
	}
	for _, k := range sortedKeys(res.Codes) {
		row(k, res.Codes[k])
	}
	for _, mk := range []func(*aggregate.Result) (*plot.Plot, error){latencyOverTime, rateOverTime, distribution} {
		p, err := mk(res)
		if err != nil {
			return errs.Wrap(errs.Internal, err, "drawing chart")
		}
		s, err := svg(p, 9*vg.Inch, 3.5*vg.Inch)
		if err != nil {
			return errs.Wrap(errs.Internal, err, "drawing chart")
		}
		data.Charts = append(data.Charts, s)
	}
	if err := page.Execute(w, data); err != nil {
		return fmt.Errorf("writing HTML report: %w", err)
	}
	return nil
}
