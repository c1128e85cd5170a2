package schedule

import (
	"math"
	"sync"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// drain returns every token of it, with elapsed fixed at 0.
func drain(it *Iterator) []time.Duration {
	var out []time.Duration
	for {
		at, ok := it.Next(0)
		if !ok {
			return out
		}
		out = append(out, at)
	}
}

func TestConstExact(t *testing.T) {
	cases := []struct {
		rps  float64
		d    time.Duration
		want []time.Duration
	}{
		{4, time.Second, []time.Duration{0, 250 * time.Millisecond, 500 * time.Millisecond, 750 * time.Millisecond}},
		{0.5, 5 * time.Second, []time.Duration{0, 2 * time.Second, 4 * time.Second}},
		{1.5, time.Second, []time.Duration{0, 666666666}},
		{0.1, 10 * time.Second, []time.Duration{0}}, // 0.1*10 is one token, not two
		{0, 10 * time.Second, nil},
		{1000, 0, nil},
	}
	for _, c := range cases {
		got := drain(NewPlan(must(Const(c.rps, c.d))).Iter(Share{}))
		if !equal(got, c.want) {
			t.Errorf("const(%g, %s) = %v, want %v", c.rps, c.d, got, c.want)
		}
	}
}

func equal(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestConstNoDrift walks 1e6 tokens at a rate whose interval is not a whole
// number of nanoseconds (3 per ms) and checks every one against k/rps.
func TestConstNoDrift(t *testing.T) {
	rps := 3000.0
	const n = 1_000_000
	it := NewPlan(must(Const(rps, time.Duration(n/rps*1e9)))).Iter(Share{})
	for k := int64(0); k < n; k++ {
		at, ok := it.Next(0)
		if !ok {
			t.Fatalf("ended after %d tokens", k)
		}
		want := float64(k) * 1e9 / rps
		if math.Abs(float64(at)-want) > 1 {
			t.Fatalf("token %d at %d ns, want %.1f", k, at, want)
		}
	}
	if _, ok := it.Next(0); ok {
		t.Fatal("more than 1e6 tokens")
	}
	// The last token of a long run is still exact to the nanosecond:
	// an accumulating schedule adding the rounded 333333 ns would be
	// 0.333 ms early here.
	if got, want := must(Const(rps, time.Hour)).At(n-1), time.Duration(333_333_000_000); got != want {
		t.Fatalf("token 999999 at %s, want %s", got, want)
	}
}

func TestLineMatchesIntegral(t *testing.T) {
	cases := []struct{ from, to float64 }{{0, 100}, {100, 0}, {10, 10}, {1, 1000}, {0.5, 2.5}}
	for _, c := range cases {
		d := 10 * time.Second
		seg := must(Line(c.from, c.to, d))
		wantN := int64(math.Ceil((c.from+c.to)/2*10 - 1e-9))
		if seg.Len() != wantN {
			t.Errorf("line(%g,%g) len %d, want %d", c.from, c.to, seg.Len(), wantN)
		}
		slope := (c.to - c.from) / 10
		prev := time.Duration(-1)
		for k := int64(0); k < seg.Len(); k++ {
			at := seg.At(k)
			if at < prev {
				t.Fatalf("line(%g,%g): token %d at %s before token %d at %s", c.from, c.to, k, at, k-1, prev)
			}
			prev = at
			ts := at.Seconds()
			integral := c.from*ts + slope*ts*ts/2
			if math.Abs(integral-float64(k)) > 1e-6*math.Max(1, float64(k)) {
				t.Fatalf("line(%g,%g): token %d at %s: integral %g", c.from, c.to, k, at, integral)
			}
			if at >= d {
				t.Fatalf("line(%g,%g): token %d at %s beyond %s", c.from, c.to, k, at, d)
			}
		}
	}
}

func TestStepAndComposite(t *testing.T) {
	steps := must(Step(1, 3, 1, time.Second))
	if len(steps) != 3 {
		t.Fatalf("step 1..3 by 1: %d segments", len(steps))
	}
	down := must(Step(10, 5, 2, time.Second)) // 10, 8, 6
	if len(down) != 3 || down[2].(constSeg).rps != 6 {
		t.Fatalf("step down: %v", down)
	}
	segs := append(steps, must(Once(2)), must(Const(0, 2*time.Second)), must(Const(2, time.Second)))
	p := NewPlan(segs...)
	want := []time.Duration{
		0,                                        // 1/s
		1 * time.Second, 1500 * time.Millisecond, // 2/s
		2 * time.Second, 2333333333, 2666666666, // 3/s
		3 * time.Second, 3 * time.Second, // once(2) at the boundary
		// 2s pause
		5 * time.Second, 5500 * time.Millisecond, // 2/s
	}
	if got := drain(p.Iter(Share{})); !equal(got, want) {
		t.Fatalf("composite = %v\nwant %v", got, want)
	}
	if p.Len() != int64(len(want)) || p.Duration() != 6*time.Second {
		t.Fatalf("len %d dur %s", p.Len(), p.Duration())
	}
	if r := p.RateAt(2500 * time.Millisecond); r != 3 {
		t.Fatalf("RateAt(2.5s) = %g", r)
	}
	if r := p.RateAt(4 * time.Second); r != 0 {
		t.Fatalf("RateAt(4s) in the pause = %g", r)
	}
}

func TestUnlimited(t *testing.T) {
	p := NewPlan(must(Const(1, 2*time.Second)), must(Unlimited(time.Second)), must(Once(1)))
	it := p.Iter(Share{})
	for _, step := range []struct {
		elapsed time.Duration
		want    time.Duration
		ok      bool
	}{
		{0, 0, true},
		{0, time.Second, true},
		{1500 * time.Millisecond, 2 * time.Second, true}, // unlimited is due at its start
		{2100 * time.Millisecond, 2100 * time.Millisecond, true},
		{2900 * time.Millisecond, 2900 * time.Millisecond, true},
		{3 * time.Second, 3 * time.Second, true}, // unlimited over: once(1) at 3s
		{3 * time.Second, 0, false},
	} {
		at, ok := it.Next(step.elapsed)
		if at != step.want || ok != step.ok {
			t.Fatalf("Next(%s) = %s,%v; want %s,%v", step.elapsed, at, ok, step.want, step.ok)
		}
	}
	if p.Len() != Unbounded || p.ShareLen(Share{}) != Unbounded {
		t.Fatal("a plan with an unlimited segment has a length")
	}
}

// TestShares checks that n shares together yield every token of the plan
// exactly once, each with its planned time.
func TestShares(t *testing.T) {
	p := NewPlan(must(Const(7, time.Second)), must(Once(3)), must(Line(0, 10, time.Second)), must(Const(3.5, 2*time.Second)))
	all := drain(p.Iter(Share{}))
	for n := int64(1); n <= 5; n++ {
		merged := make([]time.Duration, len(all))
		count := 0
		for i := int64(0); i < n; i++ {
			s := Share{Index: i, Count: n}
			got := drain(p.Iter(s))
			if int64(len(got)) != p.ShareLen(s) {
				t.Fatalf("share %d/%d: %d tokens, ShareLen %d", i, n, len(got), p.ShareLen(s))
			}
			for j, at := range got {
				g := i + int64(j)*n
				merged[g] = at
				count++
			}
		}
		if count != len(all) || !equal(merged, all) {
			t.Fatalf("%d shares do not add up to the plan", n)
		}
	}
}

func TestIteratorConcurrent(t *testing.T) {
	p := NewPlan(must(Const(1000, 10*time.Second)))
	it := p.Iter(Share{})
	seen := make([]int32, p.Len())
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				at, ok := it.Next(0)
				if !ok {
					return
				}
				mu.Lock()
				seen[at/time.Millisecond]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for k, c := range seen {
		if c != 1 {
			t.Fatalf("token %d handed out %d times", k, c)
		}
	}
}

func TestInvalid(t *testing.T) {
	cases := []struct {
		name  string
		err   error
		field string
	}{
		{"negative rate", second(Const(-1, time.Second)), "ops"},
		{"nan rate", second(Const(math.NaN(), time.Second)), "ops"},
		{"inf from", second(Line(math.Inf(1), 1, time.Second)), "from"},
		{"negative to", second(Line(1, -1, time.Second)), "to"},
		{"negative duration", second(Const(1, -time.Second)), "duration"},
		{"negative times", second(Once(-1)), "times"},
		{"zero step", second(Step(1, 5, 0, time.Second)), "step"},
		{"too many steps", second(Step(0, 1e7, 1, time.Second)), "step"},
		{"share index", Share{Index: 3, Count: 3}.Validate(), "index"},
		{"share count", Share{Count: -1}.Validate(), "count"},
	}
	for _, c := range cases {
		if !errs.IsInvalidArgument(c.err) || errs.FieldOf(c.err) != c.field {
			t.Errorf("%s: err %v, want InvalidArgument on %q", c.name, c.err, c.field)
		}
	}
}

func second[T any](_ T, err error) error { return err }
