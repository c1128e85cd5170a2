package engine

import (
	"context"
	"time"
)

// waiter sleeps an instance until its next token is due. One waiter
// belongs to one goroutine.
type waiter interface {
	// wait sleeps until the run's clock reaches at, d from now, and
	// reports false if ctx ended first.
	wait(ctx context.Context, at int64, d time.Duration) bool
	// close releases the waiter.
	close()
}

// timerWaiter waits with a runtime timer. The Go runtime wakes its
// network poller with millisecond granularity, so such waits end up to a
// millisecond late when the process is otherwise idle.
type timerWaiter struct{ t *time.Timer }

func newTimerWaiter() *timerWaiter {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &timerWaiter{t: t}
}

func (w *timerWaiter) wait(ctx context.Context, _ int64, d time.Duration) bool {
	w.t.Reset(d)
	select {
	case <-w.t.C:
		return true
	case <-ctx.Done():
		w.t.Stop()
		return false
	}
}

func (w *timerWaiter) close() { w.t.Stop() }
