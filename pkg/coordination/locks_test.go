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

// lockProcess is a process with a membership and Locks.
type lockProcess struct {
	*process
	locks *Locks
	stopL func() error
}

// newLockProcess starts a membership on memberStore and Locks on
// lockStore (usually the same store; a test that pauses only the lock
// traffic passes a gate).
func newLockProcess(t testing.TB, memberStore, lockStore store.Store) *lockProcess {
	t.Helper()
	p := newMembership(t, memberStore, defaultGroup)
	l, err := NewLocks(LocksConfig{Store: lockStore, Membership: p.m})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, l)
	eventually(t, "lock cache synced", func() (bool, string) { return l.informer.HasSynced(), "" })
	return &lockProcess{process: p, locks: l, stopL: stop}
}

func getLock(t testing.TB, st store.Store, name string) *Lock {
	t.Helper()
	l := &Lock{}
	if err := st.Get(context.Background(), meta.Key{Namespace: testNS, Name: name}, l); err != nil {
		return nil
	}
	return l
}

func TestLocksBadInput(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	p := newLockProcess(t, st, st)
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		lock  string
		opts  []LockOption
		field string
	}{
		{"empty name", "", nil, "name"},
		{"bad name", "Not_Valid", nil, "name"},
		{"negative ttl", "ok", []LockOption{WithTTL(-time.Second)}, "ttl"},
		{"sub-millisecond ttl", "ok", []LockOption{WithTTL(time.Microsecond)}, "ttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := p.locks.TryAcquire(ctx, tc.lock, tc.opts...); !errs.IsInvalidArgument(err) || errs.FieldOf(err) != tc.field {
				t.Fatalf("TryAcquire = %v (field %q), want InvalidArgument on %q", err, errs.FieldOf(err), tc.field)
			}
			if _, err := p.locks.Acquire(ctx, tc.lock, tc.opts...); !errs.IsInvalidArgument(err) || errs.FieldOf(err) != tc.field {
				t.Fatalf("Acquire = %v (field %q), want InvalidArgument on %q", err, errs.FieldOf(err), tc.field)
			}
		})
	}
	if _, err := NewLocks(LocksConfig{Store: st}); !errs.IsInvalidArgument(err) {
		t.Fatalf("NewLocks without membership = %v", err)
	}
	if _, err := NewLocks(LocksConfig{Store: bareStore(t), Membership: p.m}); !errs.IsFailedPrecondition(err) {
		t.Fatalf("NewLocks over a store without the kinds = %v", err)
	}
}

// Several processes, several goroutines each: one holder at a time, and
// every acquisition's token is above the previous one.
func TestLocksMutualExclusion(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []LockOption
	}{
		{"without ttl", nil},
		{"with ttl", []LockOption{WithTTL(300 * time.Millisecond)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			st := newStore(t)
			const procs, workers, rounds = 3, 3, 6
			var ps []*lockProcess
			for range procs {
				ps = append(ps, newLockProcess(t, st, st))
			}
			var inside atomic.Int32
			var mu sync.Mutex
			var tokens []int64
			var wg sync.WaitGroup
			errc := make(chan error, procs*workers)
			for _, p := range ps {
				for range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range rounds {
							ctx, cancel := context.WithTimeout(context.Background(), wait)
							h, err := p.locks.Acquire(ctx, "mutex", tc.opts...)
							cancel()
							if err != nil {
								errc <- err
								return
							}
							if n := inside.Add(1); n != 1 {
								errc <- fmt.Errorf("%d holders at once", n)
							}
							mu.Lock()
							if len(tokens) > 0 && h.Token <= tokens[len(tokens)-1] {
								errc <- fmt.Errorf("token %d after %d", h.Token, tokens[len(tokens)-1])
							}
							tokens = append(tokens, h.Token)
							mu.Unlock()
							if h.Context().Err() != nil {
								errc <- fmt.Errorf("fresh hold already lost: %v", context.Cause(h.Context()))
							}
							time.Sleep(time.Millisecond)
							inside.Add(-1)
							if err := h.Release(context.Background()); err != nil {
								errc <- fmt.Errorf("release: %w", err)
							}
							if h.Context().Err() == nil {
								errc <- fmt.Errorf("context live after release")
							}
						}
					}()
				}
			}
			wg.Wait()
			close(errc)
			for err := range errc {
				t.Error(err)
			}
			if len(tokens) != procs*workers*rounds {
				t.Fatalf("%d acquisitions, want %d", len(tokens), procs*workers*rounds)
			}
			if l := getLock(t, st, "mutex"); l.Spec.Holder != "" || l.Spec.Token != tokens[len(tokens)-1] {
				t.Fatalf("final lock = %+v", l.Spec)
			}
		})
	}
}

func TestLocksTryAcquire(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	a, b := newLockProcess(t, st, st), newLockProcess(t, st, st)
	ctx := context.Background()
	h, err := a.locks.TryAcquire(ctx, "try")
	if err != nil || h == nil {
		t.Fatalf("TryAcquire of a free lock = %v, %v", h, err)
	}
	if h.Key != (meta.Key{Namespace: testNS, Name: "try"}) || h.FenceName() != "Lock/"+testNS+"/try" || h.Token != 1 {
		t.Fatalf("held = %+v, fence %s", h, h.FenceName())
	}
	for _, p := range []*lockProcess{a, b} { // not re-entrant, even in the holding process
		if h2, err := p.locks.TryAcquire(ctx, "try"); h2 != nil || err != nil {
			t.Fatalf("TryAcquire of a held lock = %v, %v", h2, err)
		}
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatalf("second Release = %v", err)
	}
	h2, err := b.locks.TryAcquire(ctx, "try")
	if err != nil || h2 == nil || h2.Token != 2 {
		t.Fatalf("TryAcquire after release = %+v, %v", h2, err)
	}
	if err := h2.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLocksAcquireRespectsContext(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	a, b := newLockProcess(t, st, st), newLockProcess(t, st, st)
	h, err := a.locks.Acquire(context.Background(), "busy")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := b.locks.Acquire(ctx, "busy"); !errs.IsDeadlineExceeded(err) {
		t.Fatalf("Acquire past its deadline = %v, want DeadlineExceeded", err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { _, err := b.locks.Acquire(ctx2, "busy"); res <- err }()
	cancel2()
	if err := runtimetest.Recv(t, res, "Acquire to return"); !errs.IsCanceled(err) {
		t.Fatalf("cancelled Acquire = %v, want Canceled", err)
	}
	b.locks.mu.Lock()
	n := len(b.locks.waiters)
	b.locks.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d waiter sets left behind", n)
	}
	if err := h.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// The holder's Member is deleted: a waiter takes the lock at once, woken
// by the event (there is no TTL, and the member lease is long, so nothing
// else could wake it), and the old holder's context ends.
func TestLocksHolderMemberDeleted(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	a, b := newLockProcess(t, st, st), newLockProcess(t, st, st)
	h, err := a.locks.Acquire(context.Background(), "owned")
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		h   *Held
		err error
	}
	got := make(chan result, 1)
	go func() {
		h, err := b.locks.Acquire(context.Background(), "owned")
		got <- result{h, err}
	}()
	eventually(t, "b waits", func() (bool, string) {
		b.locks.mu.Lock()
		defer b.locks.mu.Unlock()
		return len(b.locks.waiters) == 1, ""
	})
	deleteMember(t, st, a.m.Session().Name)
	r := runtimetest.Recv(t, got, "b to acquire")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.h.Token != h.Token+1 {
		t.Fatalf("token %d after %d", r.h.Token, h.Token)
	}
	runtimetest.Recv(t, h.Lost(), "a's hold to be lost")
	if cause := context.Cause(h.Context()); !errs.IsAborted(cause) {
		t.Fatalf("cause = %v", cause)
	}
	if err := h.Release(context.Background()); !errs.IsConflict(err) {
		t.Fatalf("Release of a lost lock = %v, want Conflict", err)
	}
	if l := getLock(t, st, "owned"); l.Spec.Holder != b.m.Session().Name {
		t.Fatalf("the lost holder's Release changed the lock: %+v", l.Spec)
	}
	if err := r.h.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A holder whose process stalls stops renewing its TTL lock: a waiter
// takes it once the TTL has passed on its clock since the last renewal,
// the stalled holder's context ends, and its Release is refused.
func TestLocksTTLTakeover(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	const ttl = 300 * time.Millisecond
	ga, gb := newGate(st, "a"), newGate(st, "b")
	a, b := newLockProcess(t, st, ga), newLockProcess(t, st, gb)
	h, err := a.locks.Acquire(context.Background(), "ttl", WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	// Renewals keep it while a runs.
	eventually(t, "renewals", func() (bool, string) {
		n := len(ga.Writes("update", KindLock))
		return n >= 4, fmt.Sprint(n)
	})
	got := make(chan *Held, 1)
	go func() {
		h, err := b.locks.Acquire(context.Background(), "ttl", WithTTL(ttl))
		if err != nil {
			t.Error(err)
		}
		got <- h
	}()
	ga.Pause() // a's member still renews (another store), its lock does not
	bh := runtimetest.Recv(t, got, "b to take the lock over")
	if bh == nil {
		t.FailNow()
	}
	runtimetest.Recv(t, h.Lost(), "a's hold to end")
	if cause := context.Cause(h.Context()); !errs.IsDeadlineExceeded(cause) && !errs.IsAborted(cause) {
		t.Fatalf("cause = %v", cause)
	}
	writes := ga.Writes("update", KindLock)
	last := writes[len(writes)-1]
	var took *writeRecord
	for _, w := range gb.Writes("update", KindLock) {
		if w.obj.(*Lock).Spec.Token == bh.Token {
			took = &w
			break
		}
	}
	if took == nil {
		t.Fatal("b's takeover write not recorded")
	}
	if gap := took.start.Sub(last.start); gap < ttl {
		t.Fatalf("b took the lock %v after a's last renewal started, before the TTL %v", gap, ttl)
	}
	if bh.Token != h.Token+1 {
		t.Fatalf("token %d after %d", bh.Token, h.Token)
	}
	ga.Resume()
	if err := h.Release(context.Background()); !errs.IsConflict(err) {
		t.Fatalf("Release by the stalled holder = %v, want Conflict", err)
	}
	// b keeps it by renewing well past the TTL.
	eventually(t, "b's renewals", func() (bool, string) {
		n := 0
		for _, w := range gb.Writes("update", KindLock) {
			if w.obj.(*Lock).Spec.Token == bh.Token {
				n++
			}
		}
		return n >= 5, fmt.Sprint(n)
	})
	if bh.Context().Err() != nil {
		t.Fatalf("b lost its renewed lock: %v", context.Cause(bh.Context()))
	}
	if err := bh.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A holder that learns (from the cache) that its lock was taken over ends
// its hold even if it never writes again.
func TestLocksTakeoverSeenInCache(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	a := newLockProcess(t, st, st)
	h, err := a.locks.Acquire(context.Background(), "seen")
	if err != nil {
		t.Fatal(err)
	}
	l := getLock(t, st, "seen")
	l.Spec.Holder, l.Spec.HolderUID, l.Spec.Token = "intruder", "x/y", l.Spec.Token+3
	if err := st.Update(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	runtimetest.Recv(t, h.Lost(), "the hold to end")
	if err := h.Release(context.Background()); !errs.IsConflict(err) {
		t.Fatalf("Release = %v, want Conflict", err)
	}
	if got := getLock(t, st, "seen"); got.Spec.Holder != "intruder" {
		t.Fatalf("the intruder's lock was changed: %+v", got.Spec)
	}
}

// Tokens never go back in a process, even if the Lock document is
// deleted; deleting it under a holder ends the hold.
func TestLocksTokenSurvivesDeletion(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	a := newLockProcess(t, st, st)
	ctx := context.Background()
	var last int64
	for range 3 {
		h, err := a.locks.Acquire(ctx, "doc")
		if err != nil {
			t.Fatal(err)
		}
		last = h.Token
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	del := func() {
		if err := st.Delete(ctx, &Lock{ObjectMeta: meta.ObjectMeta{Namespace: testNS, Name: "doc"}}); err != nil {
			t.Fatal(err)
		}
	}
	del()
	eventually(t, "the cache to drop the lock", func() (bool, string) {
		_, ok := a.locks.informer.Get(meta.Key{Namespace: testNS, Name: "doc"})
		return !ok, ""
	})
	a.locks.clock.mu.Lock()
	_, remembered := a.locks.clock.seen[meta.Key{Namespace: testNS, Name: "doc"}]
	a.locks.clock.mu.Unlock()
	if remembered {
		t.Fatal("the clock still remembers a deleted lock's version")
	}
	h, err := a.locks.Acquire(ctx, "doc")
	if err != nil {
		t.Fatal(err)
	}
	if h.Token <= last {
		t.Fatalf("token after deletion = %d, want > %d", h.Token, last)
	}
	del()
	runtimetest.Recv(t, h.Lost(), "the hold to end with its document")
	if cause := context.Cause(h.Context()); !strings.Contains(cause.Error(), "deleted") {
		t.Fatalf("cause = %v", cause)
	}
}

// Stopping a process's membership ends its holds.
func TestLocksHoldsEndWithTheSession(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	a := newLockProcess(t, st, st)
	h, err := a.locks.Acquire(context.Background(), "session", WithTTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	runtimetest.Recv(t, h.Lost(), "the hold to end")
	if _, err := a.locks.Acquire(context.Background(), "other"); !errs.IsFailedPrecondition(err) {
		t.Fatalf("Acquire after the membership stopped = %v, want FailedPrecondition", err)
	}
	if err := h.Release(context.Background()); !errs.IsConflict(err) {
		t.Fatalf("Release = %v, want Conflict", err)
	}
}

// Lock metrics: the waiters gauge counts an Acquire while it is blocked,
// the wait histogram records its wait, the hold histogram a hold at
// release.
func TestLocksMetrics(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	a := newLockProcess(t, st, st)
	reg := prometheus.NewRegistry()
	p := newMembership(t, st, defaultGroup)
	l, err := NewLocks(LocksConfig{Store: st, Membership: p.m, Metrics: NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	defer run(t, l)()
	eventually(t, "lock cache synced", func() (bool, string) { return l.informer.HasSynced(), "" })
	ctx := context.Background()
	h, err := a.locks.Acquire(ctx, "metered")
	if err != nil {
		t.Fatal(err)
	}
	key := meta.Key{Namespace: testNS, Name: "metered"}.String()
	waiters := l.cfg.Metrics.lockWaiters.WithLabelValues(key)
	got := make(chan *Held, 1)
	start := time.Now()
	go func() {
		h, err := l.Acquire(ctx, "metered")
		if err != nil {
			t.Error(err)
		}
		got <- h
	}()
	eventually(t, "one waiter", func() (bool, string) { v := testutil.ToFloat64(waiters); return v == 1, fmt.Sprint(v) })
	time.Sleep(20 * time.Millisecond)
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	h2 := runtimetest.Recv(t, got, "the waiter to acquire")
	waited := time.Since(start)
	if v := testutil.ToFloat64(waiters); v != 0 {
		t.Fatalf("waiters = %v after the waiter acquired", v)
	}
	if err := h2.Release(ctx); err != nil {
		t.Fatal(err)
	}
	histogram := func(name string) (uint64, float64) {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				for _, m := range mf.GetMetric() {
					if m.GetLabel()[0].GetValue() == key {
						return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
					}
				}
			}
		}
		t.Fatalf("no %s for %s", name, key)
		return 0, 0
	}
	if n, sum := histogram("capstan_lock_wait_seconds"); n != 1 || sum < 0.02 || sum > waited.Seconds() {
		t.Fatalf("wait histogram: %d samples summing to %vs, want 1 of 0.02s..%v", n, sum, waited.Seconds())
	}
	if n, _ := histogram("capstan_lock_hold_seconds"); n != 1 {
		t.Fatalf("hold histogram: %d samples, want 1", n)
	}
}
