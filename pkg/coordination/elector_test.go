package coordination

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

var leaseKey = meta.Key{Namespace: testNS, Name: "leader"}

func newElector(t testing.TB, st store.Store, id string, mods ...func(*ElectorConfig)) *Elector {
	t.Helper()
	cfg := ElectorConfig{Store: st, Lease: leaseKey, Identity: id,
		LeaseDuration: electLease, RenewDeadline: electRenew, RetryPeriod: electRetry}
	for _, f := range mods {
		f(&cfg)
	}
	e, err := NewElector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// campaign runs e.Run in a goroutine; cancel ends it, result receives what
// Run returned.
type campaign struct {
	e      *Elector
	cancel context.CancelFunc
	result chan error
}

func runElector(t testing.TB, e *Elector, onStarted func(context.Context)) *campaign {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &campaign{e: e, cancel: cancel, result: make(chan error, 1)}
	go func() { c.result <- e.Run(ctx, onStarted) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-c.result:
		case <-time.After(wait):
			t.Errorf("elector %s did not stop", e.cfg.Identity)
		}
	})
	return c
}

// stop cancels the campaign and returns Run's result.
func (c *campaign) stop(t testing.TB) error {
	t.Helper()
	c.cancel()
	err := runtimetest.Recv(t, c.result, "Run to return")
	c.result <- err // for the cleanup
	return err
}

func getLease(t testing.TB, st store.Store) *Lease {
	t.Helper()
	l := &Lease{}
	if err := st.Get(context.Background(), leaseKey, l); err != nil {
		t.Fatalf("get lease: %v", err)
	}
	return l
}

// takeover returns the first successful write of the lease through g that
// made holder the holder with a new token.
func takeover(g *gateStore, holder string) (writeRecord, bool) {
	for _, w := range g.Writes("", KindLease) {
		l := w.obj.(*Lease)
		if l.Spec.HolderIdentity == holder && l.Spec.AcquireTime.Equal(l.Spec.RenewTime) {
			return w, true
		}
	}
	return writeRecord{}, false
}

func TestElectorConfigValidation(t *testing.T) {
	st := newStore(t)
	ok := ElectorConfig{Store: st, Lease: leaseKey, Identity: "a", LeaseDuration: electLease, RenewDeadline: electRenew, RetryPeriod: electRetry}
	cases := []struct {
		name  string
		mod   func(*ElectorConfig)
		field string
	}{
		{"no store", func(c *ElectorConfig) { c.Store = nil }, "store"},
		{"no identity", func(c *ElectorConfig) { c.Identity = "" }, "identity"},
		{"bad lease name", func(c *ElectorConfig) { c.Lease.Name = "Not_A_Name" }, "lease.name"},
		{"lease equals renew deadline", func(c *ElectorConfig) { c.LeaseDuration = c.RenewDeadline }, "leaseDuration"},
		{"lease below renew deadline", func(c *ElectorConfig) { c.LeaseDuration = time.Millisecond }, "leaseDuration"},
		{"negative lease", func(c *ElectorConfig) { c.LeaseDuration = -time.Second }, "leaseDuration"},
		{"renew deadline equals retry", func(c *ElectorConfig) { c.RetryPeriod = c.RenewDeadline }, "renewDeadline"},
		{"negative retry", func(c *ElectorConfig) { c.RetryPeriod = -time.Millisecond }, "retryPeriod"},
		{"defaults under a short renew deadline", func(c *ElectorConfig) { c.LeaseDuration, c.RetryPeriod = 0, 0 }, "renewDeadline"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.mod(&cfg)
			_, err := NewElector(cfg)
			if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != tc.field {
				t.Fatalf("NewElector = %v (field %q), want InvalidArgument on %q", err, errs.FieldOf(err), tc.field)
			}
		})
	}
	t.Run("scheme without the kinds", func(t *testing.T) {
		cfg := ok
		cfg.Store = bareStore(t)
		if _, err := NewElector(cfg); !errs.IsFailedPrecondition(err) {
			t.Fatalf("NewElector = %v, want FailedPrecondition", err)
		}
	})
	t.Run("defaults", func(t *testing.T) {
		cfg := ok
		cfg.LeaseDuration, cfg.RenewDeadline, cfg.RetryPeriod = 0, 0, 0
		e, err := NewElector(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if e.cfg.LeaseDuration != DefaultLeaseDuration || e.cfg.RenewDeadline != DefaultRenewDeadline || e.cfg.RetryPeriod != DefaultRetryPeriod {
			t.Fatalf("defaults = %v/%v/%v", e.cfg.LeaseDuration, e.cfg.RenewDeadline, e.cfg.RetryPeriod)
		}
	})
}

// Candidates come and go; the leader is always cancelled with
// ReleaseOnCancel, so each successor leads long before the lease could
// expire, no two candidates ever lead at once, and every term has a
// higher token.
func TestElectorOneLeaderAtATime(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	const lease = 30 * time.Second // never expires here: hand-over is by release only
	mod := func(c *ElectorConfig) {
		c.LeaseDuration, c.RenewDeadline, c.RetryPeriod = lease, 20*time.Second, 50*time.Millisecond
		c.ReleaseOnCancel = true
	}

	// Record every version of the lease.
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	events, err := st.Watch(wctx, KindLease, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var history []LeaseSpec
	var historyMu sync.Mutex
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for ev := range events {
			if l, ok := ev.Object.(*Lease); ok && (ev.Type == store.Added || ev.Type == store.Modified) {
				historyMu.Lock()
				history = append(history, l.Spec)
				historyMu.Unlock()
			}
		}
	}()

	var mu sync.Mutex
	campaigns := map[string]*campaign{}
	next := 0
	add := func() {
		next++
		id := fmt.Sprintf("candidate-%d", next)
		c := runElector(t, newElector(t, st, id, mod), nil)
		mu.Lock()
		campaigns[id] = c
		mu.Unlock()
	}
	for range 3 {
		add()
	}

	// The sampler reads every candidate twice; a candidate that leads in
	// both reads led throughout, so two of them would have led at once.
	stopSampling := make(chan struct{})
	var samples, overlaps atomic.Int64
	var overlapMsg atomic.Value
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		for !done(stopSampling) {
			mu.Lock()
			cs := make([]*campaign, 0, len(campaigns))
			for _, c := range campaigns {
				cs = append(cs, c)
			}
			mu.Unlock()
			first := make([]bool, len(cs))
			for i, c := range cs {
				first[i] = c.e.IsLeader()
			}
			var both []string
			for i, c := range cs {
				if first[i] && c.e.IsLeader() {
					both = append(both, c.e.cfg.Identity)
				}
			}
			samples.Add(1)
			if len(both) > 1 {
				overlaps.Add(1)
				overlapMsg.Store(strings.Join(both, ","))
			}
		}
	}()

	leader := func() (*campaign, bool, string) {
		mu.Lock()
		defer mu.Unlock()
		var found []*campaign
		for _, c := range campaigns {
			if c.e.IsLeader() {
				found = append(found, c)
			}
		}
		if len(found) != 1 {
			return nil, false, fmt.Sprintf("%d leaders", len(found))
		}
		return found[0], true, ""
	}
	var lastToken int64
	for round := range 5 {
		var cur *campaign
		eventually(t, "a leader", func() (bool, string) {
			c, ok, msg := leader()
			cur = c
			return ok, msg
		})
		tok := cur.e.Token()
		if tok <= lastToken {
			t.Fatalf("round %d: token %d after %d", round, tok, lastToken)
		}
		lastToken = tok
		id := cur.e.cfg.Identity
		cancelled := time.Now()
		if err := cur.stop(t); err != nil {
			t.Fatalf("round %d: Run of the cancelled leader = %v, want nil", round, err)
		}
		if cur.e.IsLeader() || cur.e.Token() != 0 {
			t.Fatalf("round %d: a stopped candidate still leads", round)
		}
		mu.Lock()
		delete(campaigns, id)
		mu.Unlock()
		eventually(t, "a successor", func() (bool, string) {
			_, ok, msg := leader()
			return ok, msg
		})
		if waited := time.Since(cancelled); waited >= lease {
			t.Fatalf("round %d: the successor waited %v, as long as the lease: the release did not work", round, waited)
		}
		add()
	}
	close(stopSampling)
	<-samplerDone
	if n := overlaps.Load(); n > 0 {
		t.Fatalf("%d of %d samples saw two leaders at once (last: %v)", n, samples.Load(), overlapMsg.Load())
	}
	if samples.Load() < 10 {
		t.Fatalf("only %d samples", samples.Load())
	}

	// The record: every new holder follows a release and has the next
	// token.
	wcancel()
	<-watchDone
	historyMu.Lock()
	defer historyMu.Unlock()
	prev := LeaseSpec{}
	holders := 0
	for i, s := range history {
		if s.LeaseTransitions < prev.LeaseTransitions {
			t.Fatalf("version %d: transitions went back from %d to %d", i, prev.LeaseTransitions, s.LeaseTransitions)
		}
		if s.HolderIdentity != prev.HolderIdentity && s.HolderIdentity != "" {
			holders++
			if prev.HolderIdentity != "" {
				t.Fatalf("version %d: %s took the lease from %s without a release", i, s.HolderIdentity, prev.HolderIdentity)
			}
			if s.LeaseTransitions != prev.LeaseTransitions+1 {
				t.Fatalf("version %d: %s took the lease with token %d after %d", i, s.HolderIdentity, s.LeaseTransitions, prev.LeaseTransitions)
			}
		}
		if s.HolderIdentity == prev.HolderIdentity && s.LeaseTransitions != prev.LeaseTransitions && i > 0 {
			t.Fatalf("version %d: a renewal changed the token", i)
		}
		prev = s
	}
	if holders < 6 {
		t.Fatalf("the lease saw %d holders, want at least 6: %+v", holders, history)
	}
}

// A leader that stops renewing without releasing is succeeded only after
// the lease duration has passed on the successor's clock since the
// successor saw the leader's last write, with the next token.
func TestElectorTakeoverAfterExpiry(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	ga, gb := newGate(st, "a"), newGate(st, "b")
	a := runElector(t, newElector(t, ga, "a"), nil)
	eventually(t, "a leads", func() (bool, string) { return a.e.IsLeader(), "" })
	b := runElector(t, newElector(t, gb, "b"), nil)
	eventually(t, "b sees a lead", func() (bool, string) { return b.e.Leader() == "a", b.e.Leader() })
	tokA := a.e.Token()

	if err := a.stop(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if l := getLease(t, st); l.Spec.HolderIdentity != "a" {
		t.Fatalf("without ReleaseOnCancel the lease should still name a, got %q", l.Spec.HolderIdentity)
	}
	eventually(t, "b leads", func() (bool, string) { return b.e.IsLeader(), b.e.Leader() })

	aw := ga.Writes("", KindLease)
	lastA := aw[len(aw)-1]
	took, ok := takeover(gb, "b")
	if !ok {
		t.Fatal("no takeover write by b recorded")
	}
	if gap := took.start.Sub(lastA.start); gap < electLease {
		t.Fatalf("b took the lease %v after a's last write started, before the lease duration %v", gap, electLease)
	}
	if got := b.e.Token(); got != tokA+1 {
		t.Fatalf("b's token = %d, want %d", got, tokA+1)
	}
	if l := getLease(t, st); l.Spec.HolderIdentity != "b" || l.Spec.LeaseTransitions != tokA+1 {
		t.Fatalf("lease = %+v", l.Spec)
	}
}

// A leader whose process stalls (its store calls hang) stops considering
// itself leader on its own clock before anyone can take over; when it
// wakes up it finds the lease taken, and Run ends with an error.
func TestElectorPausedLeader(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	ga := newGate(st, "a")
	var leadCtx atomic.Value
	a := runElector(t, newElector(t, ga, "a"), func(ctx context.Context) { leadCtx.Store(ctx) })
	eventually(t, "a leads", func() (bool, string) { return a.e.IsLeader(), "" })
	b := runElector(t, newElector(t, st, "b"), nil)
	eventually(t, "b sees a lead", func() (bool, string) { return b.e.Leader() == "a", "" })

	ga.Pause()
	eventually(t, "b leads", func() (bool, string) { return b.e.IsLeader(), b.e.Leader() })
	// Same monotonic clock: once b leads, a's own view must have lapsed.
	if a.e.IsLeader() || a.e.Token() != 0 {
		t.Fatal("a still considers itself leader after b took over")
	}
	ga.Resume()
	err := runtimetest.Recv(t, a.result, "a's Run to return")
	a.result <- err
	if !errs.IsAborted(err) {
		t.Fatalf("a's Run = %v, want Aborted", err)
	}
	if ctx := leadCtx.Load().(context.Context); ctx.Err() == nil {
		t.Fatal("a's leading context is still live")
	}
	if !b.e.IsLeader() || getLease(t, st).Spec.HolderIdentity != "b" {
		t.Fatal("b lost the lease to a stale leader")
	}
}

func TestElectorCallbacks(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	var mu sync.Mutex
	var events []string
	rec := func(s string) {
		mu.Lock()
		events = append(events, s)
		mu.Unlock()
	}
	got := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), events...)
	}
	callbacks := func(id string) func(*ElectorConfig) {
		return func(c *ElectorConfig) {
			c.ReleaseOnCancel = true
			c.OnNewLeader = func(l string) { rec(id + ":new:" + l) }
			c.OnStartedLeading = func(ctx context.Context) {
				rec(id + ":started")
				<-ctx.Done()
				rec(id + ":ctx-done")
			}
			c.OnStoppedLeading = func() { rec(id + ":stopped") }
		}
	}
	onStarted := make(chan context.Context, 1)
	a := runElector(t, newElector(t, st, "a", callbacks("a")), func(ctx context.Context) { onStarted <- ctx })
	aCtx := runtimetest.Recv(t, onStarted, "a's onStarted")
	eventually(t, "a started", func() (bool, string) { return len(got()) == 2, fmt.Sprint(got()) })
	if want := []string{"a:new:a", "a:started"}; fmt.Sprint(got()) != fmt.Sprint(want) {
		t.Fatalf("events = %v, want %v", got(), want)
	}
	b := runElector(t, newElector(t, st, "b", callbacks("b")), nil)
	eventually(t, "b sees a", func() (bool, string) { return len(got()) == 3, fmt.Sprint(got()) })
	if got()[2] != "b:new:a" {
		t.Fatalf("events = %v", got())
	}

	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	if aCtx.Err() == nil {
		t.Fatal("a's onStarted context is live after Run returned")
	}
	// Run returned only after the callback saw its context end, and
	// OnStoppedLeading came last (b, woken by the release, may already
	// have taken over).
	if want, ev := []string{"a:new:a", "a:started", "b:new:a", "a:ctx-done", "a:stopped"}, got(); len(ev) < 5 || fmt.Sprint(ev[:5]) != fmt.Sprint(want) {
		t.Fatalf("events = %v, want %v first", ev, want)
	}
	eventually(t, "b leads", func() (bool, string) { return len(got()) == 7, fmt.Sprint(got()) })
	if tail := got()[5:]; fmt.Sprint(tail) != fmt.Sprint([]string{"b:new:b", "b:started"}) {
		t.Fatalf("events = %v", got())
	}

	// A candidate that never leads gets neither started nor stopped.
	c := runElector(t, newElector(t, st, "c", callbacks("c")), nil)
	eventually(t, "c sees b", func() (bool, string) { return len(got()) == 8, fmt.Sprint(got()) })
	if err := c.stop(t); err != nil {
		t.Fatal(err)
	}
	if err := b.stop(t); err != nil {
		t.Fatal(err)
	}
	want := []string{"a:new:a", "a:started", "b:new:a", "a:ctx-done", "a:stopped", "b:new:b", "b:started", "c:new:b", "b:ctx-done", "b:stopped"}
	if fmt.Sprint(got()) != fmt.Sprint(want) {
		t.Fatalf("events = %v, want %v", got(), want)
	}
}

// Another process overwrites the lease with itself as holder and a higher
// token: the leader's Run returns an error, its leading context ends, it
// does not "release" the intruder's lease, and a later campaign continues
// from the intruder's token.
func TestElectorLostLease(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	var leadCtx atomic.Value
	stopped := make(chan struct{}, 3)
	a := runElector(t, newElector(t, st, "a", func(c *ElectorConfig) {
		c.ReleaseOnCancel = true
		c.OnStoppedLeading = func() { stopped <- struct{}{} }
	}), func(ctx context.Context) { leadCtx.Store(ctx) })
	eventually(t, "a leads", func() (bool, string) { return a.e.IsLeader() && leadCtx.Load() != nil, "" })

	l := getLease(t, st)
	l.Spec.HolderIdentity = "intruder"
	l.Spec.LeaseTransitions += 5
	if err := st.Update(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	err := runtimetest.Recv(t, a.result, "Run to return")
	a.result <- err
	if !errs.IsAborted(err) {
		t.Fatalf("Run = %v, want Aborted", err)
	}
	if leadCtx.Load().(context.Context).Err() == nil {
		t.Fatal("the leading context is live after the lease was lost")
	}
	runtimetest.Recv(t, stopped, "OnStoppedLeading")
	if a.e.IsLeader() {
		t.Fatal("still leader")
	}
	if got := getLease(t, st); got.Spec.HolderIdentity != "intruder" {
		t.Fatalf("the lost lease was released: holder %q", got.Spec.HolderIdentity)
	}

	// The intruder never renews: a new campaign takes over after expiry
	// with a token above the intruder's.
	a2 := runElector(t, a.e, nil)
	eventually(t, "a leads again", func() (bool, string) { return a.e.IsLeader(), a.e.Leader() })
	if got := a.e.Token(); got != l.Spec.LeaseTransitions+1 {
		t.Fatalf("token = %d, want %d", got, l.Spec.LeaseTransitions+1)
	}

	// Deleting the lease under a leader is a loss too; the next term's
	// token still grows.
	tok := a.e.Token()
	if err := st.Delete(context.Background(), &Lease{ObjectMeta: meta.ObjectMeta{Namespace: leaseKey.Namespace, Name: leaseKey.Name}}); err != nil {
		t.Fatal(err)
	}
	err = runtimetest.Recv(t, a2.result, "Run to return after the delete")
	a2.result <- err
	if !errs.IsAborted(err) {
		t.Fatalf("Run = %v, want Aborted", err)
	}
	runElector(t, a.e, nil)
	eventually(t, "a leads a recreated lease", func() (bool, string) { return a.e.IsLeader(), "" })
	if got := a.e.Token(); got <= tok {
		t.Fatalf("token after recreation = %d, want > %d", got, tok)
	}
}

// Expiry is judged on the observer's clock from when it first saw a
// version, whatever renewTime the holder wrote.
func TestElectorObservedTime(t *testing.T) {
	for _, tc := range []struct {
		name  string
		renew time.Time
	}{
		{"renewTime far in the past", time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"renewTime far in the future", time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			st := newStore(t)
			ghost := &Lease{ObjectMeta: meta.ObjectMeta{Namespace: leaseKey.Namespace, Name: leaseKey.Name},
				Spec: LeaseSpec{HolderIdentity: "ghost", LeaseDurationMillis: millis(electLease),
					AcquireTime: tc.renew, RenewTime: tc.renew, LeaseTransitions: 7}}
			if err := st.Create(context.Background(), ghost); err != nil {
				t.Fatal(err)
			}
			g := newGate(st, "a")
			started := time.Now()
			a := runElector(t, newElector(t, g, "a"), nil)
			eventually(t, "a leads", func() (bool, string) { return a.e.IsLeader(), a.e.Leader() })
			took, ok := takeover(g, "a")
			if !ok {
				t.Fatal("no takeover write")
			}
			if gap := took.start.Sub(started); gap < electLease {
				t.Fatalf("took the ghost's lease %v after starting, before the lease duration %v", gap, electLease)
			}
			if a.e.Token() != 8 {
				t.Fatalf("token = %d, want 8", a.e.Token())
			}
		})
	}

	t.Run("a holder that keeps writing an old renewTime keeps the lease", func(t *testing.T) {
		checkLeaks(t)
		st := newStore(t)
		old := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
		ghost := &Lease{ObjectMeta: meta.ObjectMeta{Namespace: leaseKey.Namespace, Name: leaseKey.Name},
			Spec: LeaseSpec{HolderIdentity: "ghost", LeaseDurationMillis: millis(electLease), AcquireTime: old, RenewTime: old, LeaseTransitions: 1}}
		if err := st.Create(context.Background(), ghost); err != nil {
			t.Fatal(err)
		}
		stopGhost := make(chan struct{})
		ghostDone := make(chan struct{})
		var ghostWrites atomic.Int64
		go func() {
			defer close(ghostDone)
			tick := time.NewTicker(electRetry)
			defer tick.Stop()
			for {
				select {
				case <-stopGhost:
					return
				case <-tick.C:
				}
				l := &Lease{}
				if err := st.Get(context.Background(), leaseKey, l); err != nil || l.Spec.HolderIdentity != "ghost" {
					return
				}
				l.Spec.RenewTime = old // a new version with the same old time
				if st.Update(context.Background(), l) == nil {
					ghostWrites.Add(1)
				}
			}
		}()
		a := runElector(t, newElector(t, st, "a"), nil)
		eventually(t, "a sees the ghost", func() (bool, string) { return a.e.Leader() == "ghost", a.e.Leader() })
		// Renewals spanning three lease durations, and a never takes over.
		from := ghostWrites.Load()
		eventually(t, "the ghost renews for three lease durations", func() (bool, string) {
			if a.e.IsLeader() {
				t.Fatal("a took a lease whose holder keeps renewing")
			}
			n := ghostWrites.Load() - from
			return n >= int64(3*electLease/electRetry), fmt.Sprint(n)
		})
		close(stopGhost)
		<-ghostDone
		if getLease(t, st).Spec.HolderIdentity != "ghost" {
			t.Fatal("the ghost lost its lease while renewing")
		}
		eventually(t, "a leads once the ghost stops", func() (bool, string) { return a.e.IsLeader(), "" })
	})
}

func TestElectorRunsOneCampaignAtATime(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	e := newElector(t, st, "a")
	runElector(t, e, nil)
	eventually(t, "a leads", func() (bool, string) { return e.IsLeader(), "" })
	if err := e.Run(context.Background(), nil); !errs.IsFailedPrecondition(err) {
		t.Fatalf("second Run = %v, want FailedPrecondition", err)
	}
}

func TestElectorMetrics(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	reg := prometheus.NewRegistry()
	e := newElector(t, st, "a", func(c *ElectorConfig) { c.Metrics = NewMetrics(reg) })
	c := runElector(t, e, nil)
	eventually(t, "a leads", func() (bool, string) { return e.IsLeader(), "" })
	lease := leaseKey.String()
	if v := testutil.ToFloat64(e.cfg.Metrics.leader.WithLabelValues(lease)); v != 1 {
		t.Fatalf("leader gauge = %v while leading", v)
	}
	if v := testutil.ToFloat64(e.cfg.Metrics.transitions.WithLabelValues(lease)); v != 1 {
		t.Fatalf("transitions = %v", v)
	}
	if err := c.stop(t); err != nil {
		t.Fatal(err)
	}
	if v := testutil.ToFloat64(e.cfg.Metrics.leader.WithLabelValues(lease)); v != 0 {
		t.Fatalf("leader gauge = %v after stopping", v)
	}
	if n, err := testutil.GatherAndCount(reg, "capstan_leader_is_leader", "capstan_lease_transitions_total"); err != nil || n != 2 {
		t.Fatalf("gathered %d series, %v", n, err)
	}
}

// slowRetry makes the retry period long against the lease, so that an
// elector that only polled would take over up to 2.4 retry periods late.
func slowRetry(c *ElectorConfig) {
	c.LeaseDuration, c.RenewDeadline, c.RetryPeriod = 600*time.Millisecond, 500*time.Millisecond, 400*time.Millisecond
}

// succession runs a as leader through ga and b as follower through gb,
// lets a lead for leadFor with b watching, stops a, waits for b to lead,
// and returns a's last write of the lease and b's takeover write.
func succession(t *testing.T, ga, gb *gateStore, modA, modB func(*ElectorConfig), leadFor time.Duration) (last, took writeRecord) {
	t.Helper()
	a := runElector(t, newElector(t, ga, "a", modA), nil)
	eventually(t, "a leads", func() (bool, string) { return a.e.IsLeader(), "" })
	b := runElector(t, newElector(t, gb, "b", modB), nil)
	eventually(t, "b sees a lead", func() (bool, string) { return b.e.Leader() == "a", b.e.Leader() })
	time.Sleep(leadFor)
	if err := a.stop(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	eventually(t, "b leads", func() (bool, string) { return b.e.IsLeader(), b.e.Leader() })
	aw := ga.Writes("", KindLease)
	took, ok := takeover(gb, "b")
	if !ok {
		t.Fatal("no takeover write by b recorded")
	}
	return aw[len(aw)-1], took
}

// A follower takes a dead leader's lease when it expires on the
// follower's clock, counted from when the watch delivered the leader's
// last renewal, not at its next poll.
func TestElectorTakesOverAtExpiry(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	// a renews a few times with b watching.
	last, took := succession(t, newGate(st, "a"), newGate(st, "b"), slowRetry, slowRetry, 1200*time.Millisecond)
	gap := took.start.Sub(last.start)
	const lease, retry = 600 * time.Millisecond, 400 * time.Millisecond
	if gap < lease {
		t.Fatalf("b took the lease %v after a's last write started, before the lease duration %v", gap, lease)
	}
	if gap > lease+retry/4 {
		t.Fatalf("b took the lease %v after a's last write started; want within the lease duration %v plus a quarter retry period", gap, lease)
	}
}

// A released lease is taken as soon as the release is seen, without
// waiting for the next retry.
func TestElectorTakesReleasedLeaseAtOnce(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	release := func(c *ElectorConfig) { slowRetry(c); c.ReleaseOnCancel = true }
	released, took := succession(t, newGate(st, "a"), newGate(st, "b"), release, slowRetry, 200*time.Millisecond)
	if l := released.obj.(*Lease); l.Spec.HolderIdentity != "" {
		t.Fatalf("a's last write names %q, want the release", l.Spec.HolderIdentity)
	}
	if gap := took.start.Sub(released.start); gap > 100*time.Millisecond {
		t.Fatalf("b took the released lease %v after the release started; want at once (retry period 400ms)", gap)
	}
}

// noWatchStore fails every Watch.
type noWatchStore struct{ store.Store }

func (noWatchStore) Watch(context.Context, string, store.WatchOptions) (<-chan store.Event, error) {
	return nil, errs.New(errs.Unavailable, "watch is down")
}

// Without a watch, the elector still takes an expired lease over by
// polling, and never before the lease duration.
func TestElectorPollsWithoutWatch(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	none := func(*ElectorConfig) {}
	last, took := succession(t, newGate(st, "a"), newGate(noWatchStore{st}, "b"), none, none, 0)
	if gap := took.start.Sub(last.start); gap < electLease {
		t.Fatalf("b took the lease %v after a's last write, before the lease duration %v", gap, electLease)
	}
}
