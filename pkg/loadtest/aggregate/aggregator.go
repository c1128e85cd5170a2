package aggregate

import (
	"context"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
)

// Sink receives every sample, in the aggregator's goroutine. A sink that
// returns an error is closed and receives nothing more; the first error is
// returned by Run. A sink that also has a method SetStart(time.Time) is
// given the run's wall-clock start when the aggregator is made. A sink
// with a method WantsPhases() bool that returns true asks the engine for
// the phases of shots (Sample.Connect, Send, Receive) from guns that
// measure them only on request, because it costs them allocations.
type Sink interface {
	// Write records one sample. It MUST NOT retain s.
	Write(s *Sample) error
	// Close flushes and releases the sink.
	Close() error
}

// WantsPhases reports whether one of sinks asks for the phases of shots:
// it has a method WantsPhases() bool that returns true.
func WantsPhases(sinks []Sink) bool {
	for _, s := range sinks {
		if w, ok := s.(interface{ WantsPhases() bool }); ok && w.WantsPhases() {
			return true
		}
	}
	return false
}

// Options configure an Aggregator.
type Options struct {
	// Start is the wall-clock time of the run's start; samples' times are
	// offsets from it.
	Start time.Time
	// Buffer is the number of samples Report can queue before it drops
	// them; default 65536.
	Buffer int
	// OverdueAfter is the lateness (Sent-Intended) beyond which a shot
	// counts as overdue; default 1ms.
	OverdueAfter time.Duration
	// Sinks receive every sample.
	Sinks []Sink
	// Rules are thresholds and autostop conditions.
	Rules []Rule
	// OnStop is called once, from the aggregator's goroutine, when a rule
	// with a window is violated; the engine then ends the run.
	OnStop func(v Violation)
	// Clock returns the time since Start; default time.Since(Start). Tests
	// may replace it.
	Clock func() time.Duration
}

// Stats are the numbers of a group of samples.
type Stats struct {
	// Count is the number of samples.
	Count int64 `json:"count"`
	// Errors is the number of samples whose class is not OK.
	Errors int64 `json:"errors"`
	// Overdue is the number of shots sent later than OverdueAfter.
	Overdue int64 `json:"overdue"`
	// BytesOut and BytesIn sum request and response sizes.
	BytesOut int64 `json:"bytesOut"`
	// BytesIn sums response sizes.
	BytesIn int64 `json:"bytesIn"`
	// Latency is Done-Intended (corrected for coordinated omission).
	Latency *Histogram `json:"latency"`
	// Service is Done-Sent.
	Service *Histogram `json:"service"`
}

func newStats() *Stats { return &Stats{Latency: NewHistogram(), Service: NewHistogram()} }

func (st *Stats) add(s *Sample, overdue bool) {
	st.Count++
	if s.Class != OK {
		st.Errors++
	}
	if overdue {
		st.Overdue++
	}
	st.BytesOut += s.BytesOut
	st.BytesIn += s.BytesIn
	st.Latency.Record(s.Latency())
	st.Service.Record(s.Service())
}

// Merge adds o's numbers to st.
func (st *Stats) Merge(o *Stats) {
	st.Count += o.Count
	st.Errors += o.Errors
	st.Overdue += o.Overdue
	st.BytesOut += o.BytesOut
	st.BytesIn += o.BytesIn
	st.Latency.Merge(o.Latency)
	st.Service.Merge(o.Service)
}

// ErrorRate returns Errors/Count, 0 for no samples.
func (st *Stats) ErrorRate() float64 {
	if st.Count == 0 {
		return 0
	}
	return float64(st.Errors) / float64(st.Count)
}

// Second is one second of the timeline, by completion time. Its latency
// histogram is kept only in encoded form (HDR) to stay small; the
// quantiles are precomputed.
type Second struct {
	// At is the second's index since the start of the run.
	At int64 `json:"at"`
	// Count is the number of samples done in the second.
	Count int64 `json:"count"`
	// Errors is the number of failed samples done in the second.
	Errors int64 `json:"errors"`
	// P50, P90, P99 and Max are corrected latency quantiles in
	// milliseconds.
	P50 float64 `json:"p50Ms"`
	// P90 is the 90th percentile in milliseconds.
	P90 float64 `json:"p90Ms"`
	// P99 is the 99th percentile in milliseconds.
	P99 float64 `json:"p99Ms"`
	// Max is the largest latency in milliseconds.
	Max float64 `json:"maxMs"`
	// HDR is the encoded latency histogram; empty for no samples.
	HDR string `json:"hdr,omitempty"`
}

// Histogram decodes the second's latency histogram.
func (s *Second) Histogram() (*Histogram, error) {
	if s.HDR == "" {
		return NewHistogram(), nil
	}
	return DecodeHistogram(s.HDR)
}

// setHistogram stores h (encoded) and its quantiles.
func (s *Second) setHistogram(h *Histogram) {
	s.HDR, s.P50, s.P90, s.P99, s.Max = "", 0, 0, 0, 0
	if h.Count() == 0 {
		return
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	s.P50, s.P90, s.P99, s.Max = ms(h.Quantile(50)), ms(h.Quantile(90)), ms(h.Quantile(99)), ms(h.Max())
	s.HDR, _ = h.Encode()
}

// liveSecond is a second still taking samples.
type liveSecond struct {
	count, errors int64
	latency       *Histogram
}

// Result is the outcome of a run (or of several replicas' runs merged).
type Result struct {
	// Start is when the run started.
	Start time.Time `json:"start"`
	// Elapsed is how long it ran, in seconds.
	Elapsed float64 `json:"elapsedSeconds"`
	// Total are the numbers of all samples.
	Total *Stats `json:"total"`
	// Lateness is Sent-Intended of all samples.
	Lateness *Histogram `json:"lateness"`
	// Tags are the numbers per tag.
	Tags map[string]*Stats `json:"tags,omitempty"`
	// Codes are the numbers per result code ("http 200", "grpc
	// Unavailable", or the error class for failures without a code).
	Codes map[string]*Stats `json:"codes,omitempty"`
	// Classes counts samples per outcome class.
	Classes map[string]int64 `json:"classes,omitempty"`
	// Dropped is the number of samples the aggregator could not take.
	Dropped int64 `json:"dropped"`
	// Discarded is the number of shots skipped for being too late.
	Discarded int64 `json:"discarded"`
	// Timeline is one entry per second.
	Timeline []*Second `json:"timeline,omitempty"`
}

// NewResult returns an empty result.
func NewResult(start time.Time) *Result {
	return &Result{Start: start, Total: newStats(), Lateness: NewHistogram(),
		Tags: map[string]*Stats{}, Codes: map[string]*Stats{}, Classes: map[string]int64{}}
}

// RPS returns the mean completion rate.
func (r *Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Total.Count) / r.Elapsed
}

// Merge adds o (for example another replica's result) to r losslessly:
// counts add up, histograms merge, timelines merge second by second
// relative to each result's start.
func (r *Result) Merge(o *Result) {
	if r.Total == nil {
		*r = *NewResult(o.Start)
	}
	if r.Start.IsZero() || (!o.Start.IsZero() && o.Start.Before(r.Start)) {
		r.Start = o.Start
	}
	r.Elapsed = max(r.Elapsed, o.Elapsed)
	r.Total.Merge(o.Total)
	r.Lateness.Merge(o.Lateness)
	mergeMap(r.Tags, o.Tags)
	mergeMap(r.Codes, o.Codes)
	for k, v := range o.Classes {
		r.Classes[k] += v
	}
	r.Dropped += o.Dropped
	r.Discarded += o.Discarded
	byAt := map[int64]*Second{}
	for _, s := range r.Timeline {
		byAt[s.At] = s
	}
	for _, s := range o.Timeline {
		d, ok := byAt[s.At]
		if !ok {
			c := *s
			byAt[s.At] = &c
			r.Timeline = append(r.Timeline, &c)
			continue
		}
		d.Count += s.Count
		d.Errors += s.Errors
		h1, err1 := d.Histogram()
		h2, err2 := s.Histogram()
		if err1 == nil && err2 == nil {
			h1.Merge(h2)
			d.setHistogram(h1)
		}
	}
	sort.Slice(r.Timeline, func(i, j int) bool { return r.Timeline[i].At < r.Timeline[j].At })
}

func mergeMap(dst, src map[string]*Stats) {
	for k, v := range src {
		d, ok := dst[k]
		if !ok {
			d = newStats()
			dst[k] = d
		}
		d.Merge(v)
	}
}

// Progress is a snapshot of a running aggregation.
type Progress struct {
	// Elapsed is the time since the start.
	Elapsed time.Duration
	// Count, Errors, Dropped and Discarded are totals so far.
	Count, Errors, Dropped, Discarded int64
	// RPS is the number of shots completed in the last full second.
	RPS float64
	// P50 and P99 are the corrected latency quantiles so far.
	P50, P99 time.Duration
	// Codes counts samples per result code so far.
	Codes map[string]int64
}

type codeKey struct {
	proto Proto
	code  int32
	class Class
}

// Aggregator collects samples. Report may be called from any goroutine;
// Run must be running for samples to be taken.
type Aggregator struct {
	opts      Options
	ch        chan Sample
	closeOnce sync.Once
	closed    chan struct{}
	dropped   atomic.Int64
	discarded atomic.Int64

	mu       sync.Mutex // guards everything below
	res      *Result
	codeKeys map[codeKey]string
	open     map[int64]*liveSecond // seconds not yet closed, by index
	next     int64                 // the first second not yet closed
	spare    []*Histogram
	stopped  bool
	sinkErr  error
	sinks    []Sink
	streaks  []time.Duration
	classes  [numClasses]int64
	scratch  *Sample // the sample being recorded; sinks see a pointer to it
}

// closeGrace is how long a second stays open after it ended, for samples
// that complete in it but reach the aggregator later.
const closeGrace = 2

// New returns an aggregator; call Run to start it.
func New(opts Options) *Aggregator {
	if opts.Buffer <= 0 {
		opts.Buffer = 1 << 16
	}
	if opts.OverdueAfter <= 0 {
		opts.OverdueAfter = time.Millisecond
	}
	if opts.Start.IsZero() {
		opts.Start = time.Now()
	}
	if opts.Clock == nil {
		start := opts.Start
		opts.Clock = func() time.Duration { return time.Since(start) }
	}
	for _, s := range opts.Sinks {
		if st, ok := s.(interface{ SetStart(time.Time) }); ok {
			st.SetStart(opts.Start)
		}
	}
	return &Aggregator{
		opts:     opts,
		ch:       make(chan Sample, opts.Buffer),
		closed:   make(chan struct{}),
		res:      NewResult(opts.Start),
		codeKeys: map[codeKey]string{},
		open:     map[int64]*liveSecond{},
		sinks:    opts.Sinks,
		streaks:  make([]time.Duration, len(opts.Rules)),
		scratch:  new(Sample),
	}
}

// Report queues a sample without blocking; when the queue is full the
// sample is dropped and counted. Report after Close drops the sample.
func (a *Aggregator) Report(s Sample) {
	select {
	case <-a.closed:
		a.dropped.Add(1)
		return
	default:
	}
	select {
	case a.ch <- s:
	default:
		a.dropped.Add(1)
	}
}

// Discard counts a shot that the engine skipped for being too late.
func (a *Aggregator) Discard() { a.discarded.Add(1) }

// Close ends the intake: Run drains what is queued and returns.
func (a *Aggregator) Close() { a.closeOnce.Do(func() { close(a.closed) }) }

// Run records samples until Close is called (or ctx ends) and the queue
// is drained, closing the sinks at the end. It returns the first sink
// error.
func (a *Aggregator) Run(ctx context.Context) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	done := ctx.Done()
	for {
		select {
		case s := <-a.ch:
			a.take(s)
		case <-tick.C:
			a.mu.Lock()
			a.closeBefore(int64(a.opts.Clock()/time.Second) - closeGrace)
			a.mu.Unlock()
		case <-done:
			a.Close()
			done = nil
		case <-a.closed:
			a.mu.Lock()
			for {
				select {
				case s := <-a.ch:
					*a.scratch = s
					a.record(a.scratch)
					continue
				default:
				}
				break
			}
			a.finish()
			err := a.sinkErr
			a.mu.Unlock()
			return err
		}
	}
}

// take records s and whatever else is queued, under one lock.
func (a *Aggregator) take(s Sample) {
	a.mu.Lock()
	defer a.mu.Unlock()
	*a.scratch = s
	a.record(a.scratch)
	for i := 0; i < 256; i++ {
		select {
		case *a.scratch = <-a.ch:
			a.record(a.scratch)
		default:
			return
		}
	}
}

func (a *Aggregator) record(s *Sample) {
	overdue := time.Duration(s.Lateness()) > a.opts.OverdueAfter
	r := a.res
	r.Total.add(s, overdue)
	r.Lateness.Record(s.Lateness())
	tag, ok := r.Tags[s.Tag]
	if !ok {
		tag = newStats()
		r.Tags[s.Tag] = tag
	}
	tag.add(s, overdue)
	ck := codeKey{s.Proto, s.Code, s.Class}
	name, ok := a.codeKeys[ck]
	if !ok {
		name = codeName(ck)
		a.codeKeys[ck] = name
		if r.Codes[name] == nil {
			r.Codes[name] = newStats()
		}
	}
	r.Codes[name].add(s, overdue)
	a.classes[s.Class]++
	sec := max(s.Done/int64(time.Second), a.next)
	cs, ok := a.open[sec]
	if !ok {
		cs = &liveSecond{}
		if n := len(a.spare); n > 0 {
			cs.latency, a.spare = a.spare[n-1], a.spare[:n-1]
		} else {
			cs.latency = NewHistogram()
		}
		a.open[sec] = cs
	}
	cs.count++
	if s.Class != OK {
		cs.errors++
	}
	cs.latency.Record(s.Latency())
	for i := 0; i < len(a.sinks); i++ {
		if err := a.sinks[i].Write(s); err != nil {
			if a.sinkErr == nil {
				a.sinkErr = err
			}
			a.sinks[i].Close()
			a.sinks = append(a.sinks[:i], a.sinks[i+1:]...)
			i--
		}
	}
}

func codeName(k codeKey) string {
	switch k.proto {
	case HTTP:
		return "http " + strconv.Itoa(int(k.code))
	case GRPC:
		return "grpc " + errs.Code(k.code).String()
	}
	return k.class.String()
}

// closeBefore closes every second before sec, in order, including empty
// ones, and evaluates the windowed rules on each.
func (a *Aggregator) closeBefore(sec int64) {
	for a.next < sec {
		cs, ok := a.open[a.next]
		if !ok {
			cs = &liveSecond{}
		}
		a.evaluate(a.next, cs)
		closed := &Second{At: a.next, Count: cs.count, Errors: cs.errors}
		if ok {
			closed.setHistogram(cs.latency)
			delete(a.open, a.next)
			cs.latency.Reset()
			a.spare = append(a.spare, cs.latency)
		}
		a.res.Timeline = append(a.res.Timeline, closed)
		a.next++
	}
}

// evaluate updates the windowed rules with a closed second.
func (a *Aggregator) evaluate(at int64, s *liveSecond) {
	for i, rule := range a.opts.Rules {
		if rule.For <= 0 {
			continue
		}
		st := &Stats{Count: s.count, Errors: s.errors, Latency: s.latency}
		v, ok := rule.value(st, 1)
		if !ok || !rule.holds(v) {
			a.streaks[i] = 0
			continue
		}
		a.streaks[i] += time.Second
		if a.streaks[i] >= rule.For && !a.stopped {
			a.stopped = true
			if a.opts.OnStop != nil {
				a.opts.OnStop(Violation{Rule: rule, Value: v, At: time.Duration(at+1) * time.Second})
			}
		}
	}
}

func (a *Aggregator) finish() {
	elapsed := a.opts.Clock()
	last := a.next - 1
	for sec := range a.open {
		last = max(last, sec)
	}
	a.closeBefore(last + 1)
	for _, s := range a.sinks {
		if err := s.Close(); err != nil && a.sinkErr == nil {
			a.sinkErr = err
		}
	}
	a.sinks = nil
	for c, n := range a.classes {
		if n > 0 {
			a.res.Classes[Class(c).String()] = n
		}
	}
	a.res.Elapsed = elapsed.Seconds()
	a.res.Dropped = a.dropped.Load()
	a.res.Discarded = a.discarded.Load()
}

// Progress returns a snapshot; safe to call at any time.
func (a *Aggregator) Progress() Progress {
	a.mu.Lock()
	defer a.mu.Unlock()
	t := a.res.Total
	elapsed := a.opts.Clock()
	p := Progress{
		Elapsed: elapsed, Count: t.Count, Errors: t.Errors,
		Dropped: a.dropped.Load(), Discarded: a.discarded.Load(),
	}
	// The rate of the last full second: still open (seconds stay open a
	// while for late samples) or already in the timeline.
	last := int64(elapsed/time.Second) - 1
	if cs, ok := a.open[last]; ok {
		p.RPS = float64(cs.count)
	} else if n := len(a.res.Timeline); n > 0 && a.res.Timeline[n-1].At == last {
		p.RPS = float64(a.res.Timeline[n-1].Count)
	}
	if t.Count > 0 {
		p.P50, p.P99 = t.Latency.Quantile(50), t.Latency.Quantile(99)
	}
	p.Codes = make(map[string]int64, len(a.res.Codes))
	for k, v := range a.res.Codes {
		p.Codes[k] = v.Count
	}
	return p
}

// Result returns the result; call it after Run has returned.
func (a *Aggregator) Result() *Result {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.res
}
