package schedule

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
)

// Unbounded is the Len of a segment whose token count is not known in
// advance (Unlimited).
const Unbounded int64 = -1

// Segment is a closed-form part of a plan.
//
// Implementations MUST be immutable and safe for concurrent use. At MUST be a
// pure function of k, non-decreasing in k, and return offsets in
// [0, Duration()] for 0 <= k < Len(). A segment whose Len is Unbounded
// (Unlimited) has no At: its tokens are due as soon as they are asked for,
// until its Duration has passed.
type Segment interface {
	// Len returns the number of tokens, or Unbounded.
	Len() int64
	// Duration returns how long the segment lasts. The next segment of a
	// plan starts this long after this one, even if this one's last token
	// came earlier.
	Duration() time.Duration
	// At returns the intended offset of token k from the segment's start.
	At(k int64) time.Duration
	// String describes the segment, for example "const(100/s, 10s)".
	String() string
}

// countBelow returns the number of integers k >= 0 with k < x, tolerating
// floating-point noise so that 0.1*10 counts 1, not 2.
func countBelow(x float64) int64 {
	if x <= 0 {
		return 0
	}
	return int64(math.Ceil(x - 1e-9))
}

type constSeg struct {
	rps float64
	d   time.Duration
	n   int64
}

// Const returns a segment of rps tokens per second for d; token k is due at
// k/rps. rps may be fractional; rps 0 is a pause of d.
func Const(rps float64, d time.Duration) (Segment, error) {
	if err := checkRate("ops", rps); err != nil {
		return nil, err
	}
	if err := checkDuration(d); err != nil {
		return nil, err
	}
	return constSeg{rps: rps, d: d, n: countBelow(rps * d.Seconds())}, nil
}

func (s constSeg) Len() int64              { return s.n }
func (s constSeg) Duration() time.Duration { return s.d }
func (s constSeg) At(k int64) time.Duration {
	return time.Duration(float64(k) * 1e9 / s.rps)
}
func (s constSeg) String() string { return fmt.Sprintf("const(%g/s, %s)", s.rps, s.d) }

type lineSeg struct {
	from, to float64
	d        time.Duration
	slope    float64 // rps per second
	n        int64
}

// Line returns a segment whose rate grows (or falls) linearly from `from` to
// `to` tokens per second over d. Token k is due at the time t where the
// integral of the rate from 0 to t equals k:
//
//	from*t + slope*t²/2 = k, slope = (to-from)/d
//	t = 2k / (from + sqrt(from² + 2*slope*k))
//
// (the numerically stable root). The segment has ceil((from+to)/2*d) tokens.
func Line(from, to float64, d time.Duration) (Segment, error) {
	if err := checkRate("from", from); err != nil {
		return nil, err
	}
	if err := checkRate("to", to); err != nil {
		return nil, err
	}
	if err := checkDuration(d); err != nil {
		return nil, err
	}
	sec := d.Seconds()
	s := lineSeg{from: from, to: to, d: d, n: countBelow((from + to) / 2 * sec)}
	if sec > 0 {
		s.slope = (to - from) / sec
	}
	return s, nil
}

func (s lineSeg) Len() int64              { return s.n }
func (s lineSeg) Duration() time.Duration { return s.d }
func (s lineSeg) At(k int64) time.Duration {
	if k == 0 {
		return 0
	}
	fk := float64(k)
	disc := s.from*s.from + 2*s.slope*fk
	if disc < 0 {
		disc = 0
	}
	den := s.from + math.Sqrt(disc)
	if den <= 0 {
		return s.d
	}
	t := time.Duration(2 * fk / den * 1e9)
	if t > s.d {
		t = s.d
	}
	return t
}
func (s lineSeg) String() string { return fmt.Sprintf("line(%g→%g/s, %s)", s.from, s.to, s.d) }

type onceSeg struct{ n int64 }

// Once returns a segment of n tokens all due at its start, lasting no time.
func Once(n int64) (Segment, error) {
	if n < 0 {
		return nil, errs.Invalid("times", "must not be negative, got %d", n)
	}
	return onceSeg{n: n}, nil
}

func (s onceSeg) Len() int64              { return s.n }
func (s onceSeg) Duration() time.Duration { return 0 }
func (s onceSeg) At(int64) time.Duration  { return 0 }
func (s onceSeg) String() string          { return fmt.Sprintf("once(%d)", s.n) }

type unlimitedSeg struct{ d time.Duration }

// Unlimited returns a segment that hands out tokens as fast as they are
// asked for, for d. Its tokens are never late: each is due when taken.
func Unlimited(d time.Duration) (Segment, error) {
	if err := checkDuration(d); err != nil {
		return nil, err
	}
	return unlimitedSeg{d: d}, nil
}

func (s unlimitedSeg) Len() int64              { return Unbounded }
func (s unlimitedSeg) Duration() time.Duration { return s.d }
func (s unlimitedSeg) At(int64) time.Duration  { return 0 }
func (s unlimitedSeg) String() string          { return fmt.Sprintf("unlimited(%s)", s.d) }

// Step returns the segments of a staircase: rate from, from+step, … up to and
// including to (or down, when to < from), each held for d.
func Step(from, to, step float64, d time.Duration) ([]Segment, error) {
	if err := checkRate("from", from); err != nil {
		return nil, err
	}
	if err := checkRate("to", to); err != nil {
		return nil, err
	}
	if !(step > 0) || math.IsInf(step, 0) {
		return nil, errs.Invalid("step", "must be a positive number, got %g", step)
	}
	if err := checkDuration(d); err != nil {
		return nil, err
	}
	n := int64(math.Floor(math.Abs(to-from)/step+1e-9)) + 1
	if n > 1e6 {
		return nil, errs.Invalid("step", "makes %d steps; at most 1e6 are allowed", n)
	}
	sign := 1.0
	if to < from {
		sign = -1
	}
	segs := make([]Segment, 0, n)
	for i := int64(0); i < n; i++ {
		c, err := Const(from+sign*float64(i)*step, d)
		if err != nil {
			return nil, err
		}
		segs = append(segs, c)
	}
	return segs, nil
}

func checkRate(field string, r float64) error {
	if r < 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		return errs.Invalid(field, "must be a finite number >= 0, got %g", r)
	}
	return nil
}

func checkDuration(d time.Duration) error {
	if d < 0 {
		return errs.Invalid("duration", "must not be negative, got %s", d)
	}
	return nil
}

// Plan is a composite schedule: its segments run one after another, segment
// j starting at the sum of the durations of segments 0..j-1. A Plan is
// immutable; Iter starts a walk over it.
type Plan struct {
	segs   []Segment
	starts []time.Duration
	total  int64
	dur    time.Duration
}

// NewPlan returns the plan of segs in order.
func NewPlan(segs ...Segment) *Plan {
	p := &Plan{segs: segs, starts: make([]time.Duration, len(segs))}
	for i, s := range segs {
		p.starts[i] = p.dur
		p.dur += s.Duration()
		if s.Len() == Unbounded || p.total == Unbounded {
			p.total = Unbounded
		} else {
			p.total += s.Len()
		}
	}
	return p
}

// Len returns the number of tokens of the plan, or Unbounded.
func (p *Plan) Len() int64 { return p.total }

// Duration returns the sum of the segments' durations.
func (p *Plan) Duration() time.Duration { return p.dur }

// Segments returns the plan's segments.
func (p *Plan) Segments() []Segment { return p.segs }

// RateAt returns the target rate in tokens per second at offset t, for
// progress reports: the local rate of the segment active at t, 0 outside the
// plan and for Once and Unlimited segments.
func (p *Plan) RateAt(t time.Duration) float64 {
	for i, s := range p.segs {
		start := p.starts[i]
		if t < start || t >= start+s.Duration() {
			continue
		}
		switch v := s.(type) {
		case constSeg:
			return v.rps
		case lineSeg:
			return v.from + v.slope*(t-start).Seconds()
		}
		return 0
	}
	return 0
}

// String describes the plan.
func (p *Plan) String() string {
	s := ""
	for i, seg := range p.segs {
		if i > 0 {
			s += " + "
		}
		s += seg.String()
	}
	return s
}

// Share selects the part of a plan that one of Count replicas produces:
// replica Index takes the tokens whose index in the whole plan is congruent
// to Index modulo Count, so the replicas together produce every token
// exactly once at its planned time. The zero value (and Count 1) is the
// whole plan. Unlimited segments are not split: every replica runs them.
type Share struct {
	// Index is this replica's number, 0 <= Index < Count.
	Index int64 `json:"index"`
	// Count is the number of replicas.
	Count int64 `json:"count"`
}

// Validate reports an out-of-range share.
func (s Share) Validate() error {
	if s.Count < 0 {
		return errs.Invalid("count", "must not be negative, got %d", s.Count)
	}
	if s.Count > 0 && (s.Index < 0 || s.Index >= s.Count) {
		return errs.Invalid("index", "must be in [0, %d), got %d", s.Count, s.Index)
	}
	if s.Count == 0 && s.Index != 0 {
		return errs.Invalid("index", "must be 0 without a count, got %d", s.Index)
	}
	return nil
}

func (s Share) count() int64 {
	if s.Count <= 0 {
		return 1
	}
	return s.Count
}

// ShareLen returns how many of the plan's tokens fall into share s, or Unbounded.
func (p *Plan) ShareLen(s Share) int64 {
	if p.total == Unbounded {
		return Unbounded
	}
	n := s.count()
	// Tokens with global index g in [0,total) and g ≡ Index (mod n).
	if p.total <= s.Index {
		return 0
	}
	return (p.total-1-s.Index)/n + 1
}

// Iter returns a new walk over the share s of the plan.
func (p *Plan) Iter(s Share) *Iterator {
	it := &Iterator{p: p, n: s.count(), idx: s.Index}
	it.enterSegment(0, 0)
	return it
}

// Iterator hands out a plan's tokens in order. It is safe for concurrent
// use: each token is handed out once.
type Iterator struct {
	mu     sync.Mutex
	p      *Plan
	n, idx int64
	seg    int   // current segment
	k      int64 // next token index within the segment
	base   int64 // global index of the segment's first token
	done   bool
}

// enterSegment moves to segment j whose first token has global index base
// and positions k on the first token of this share.
func (it *Iterator) enterSegment(j int, base int64) {
	it.seg, it.base = j, base
	if j >= len(it.p.segs) {
		it.done = true
		return
	}
	// Smallest k >= 0 with (base+k) ≡ idx (mod n).
	it.k = ((it.idx-base)%it.n + it.n) % it.n
}

// Next returns the intended offset from the plan's start of the next token,
// or ok false when the plan is finished. elapsed is the time since the
// plan's start; it only matters to Unlimited segments, whose tokens are due
// at max(elapsed, segment start) until the segment has ended.
func (it *Iterator) Next(elapsed time.Duration) (at time.Duration, ok bool) {
	it.mu.Lock()
	defer it.mu.Unlock()
	for !it.done {
		s := it.p.segs[it.seg]
		start := it.p.starts[it.seg]
		if s.Len() == Unbounded {
			end := start + s.Duration()
			if elapsed < end {
				return max(elapsed, start), true
			}
			// An unlimited segment consumes no global indexes, so the
			// shares of later segments stay aligned across replicas.
			it.enterSegment(it.seg+1, it.base)
			continue
		}
		if it.k < s.Len() {
			at = start + s.At(it.k)
			it.k += it.n
			return at, true
		}
		it.enterSegment(it.seg+1, it.base+s.Len())
	}
	return 0, false
}
