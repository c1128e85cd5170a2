package engine

import (
	"context"
	"testing"
	"time"
)

// TestWaiterDeadlineAlreadyPassed arms waits whose slot is due at once or
// already past, as happens when the instance is descheduled between
// computing the wait and sleeping: each must return, never hang.
func TestWaiterDeadlineAlreadyPassed(t *testing.T) {
	base := monotonicNow()
	start := time.Now()
	w := newWaiter(base-int64(time.Second), time.Nanosecond) // the run "started" 1s ago
	defer w.close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 1000; i++ {
			// Due 1µs after a point the clock has already passed.
			at := int64(time.Since(start)) + int64(time.Second) - int64(time.Millisecond)
			w.wait(context.Background(), at, time.Microsecond)
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("a wait for a past deadline hung")
	}
}

func TestWaiters(t *testing.T) {
	base := monotonicNow()
	start0 := time.Now()
	now := func() int64 { return int64(time.Since(start0)) }
	wait := func(w waiter, ctx context.Context, d time.Duration) bool {
		return w.wait(ctx, now()+int64(d), d)
	}
	for name, mk := range map[string]func() waiter{
		"default": func() waiter { return newWaiter(base, 500*time.Microsecond) },
		"timer":   func() waiter { return newTimerWaiter() },
	} {
		w := mk()
		ctx := context.Background()
		start := time.Now()
		if !wait(w, ctx, 20*time.Millisecond) {
			t.Fatalf("%s: wait failed", name)
		}
		if el := time.Since(start); el < 20*time.Millisecond {
			t.Fatalf("%s: woke after %s, before the 20ms deadline", name, el)
		}
		// Cancellation ends a long wait.
		cctx, cancel := context.WithCancel(ctx)
		go func() {
			time.Sleep(20 * time.Millisecond)
			cancel()
		}()
		start = time.Now()
		if wait(w, cctx, time.Hour) {
			t.Fatalf("%s: canceled wait reported success", name)
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("%s: cancel took %s", name, time.Since(start))
		}
		if wait(w, cctx, time.Millisecond) {
			t.Fatalf("%s: wait on a canceled context succeeded", name)
		}
		// The waiter still works with a new context after a cancellation,
		// and a stale expiration does not end a later wait early.
		start = time.Now()
		for i := 0; i < 3; i++ {
			if !wait(w, ctx, 10*time.Millisecond) {
				t.Fatalf("%s: wait after cancel failed", name)
			}
		}
		if el := time.Since(start); el < 30*time.Millisecond {
			t.Fatalf("%s: three 10ms waits took %s", name, el)
		}
		w.close()
	}
}
