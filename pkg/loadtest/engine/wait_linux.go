//go:build linux

package engine

import (
	"context"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// monotonicNow returns CLOCK_MONOTONIC in nanoseconds (the clock of Go's
// monotonic readings and of the waiters' timerfds), or 0 if unavailable.
func monotonicNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

// fdWaiter waits on a timerfd registered with the runtime's network
// poller. The kernel's high-resolution timer wakes the poller at the
// deadline, where a runtime timer would round the poller's sleep to whole
// milliseconds. Deadlines are rounded up to a grid of resolution on the
// run's clock, in absolute CLOCK_MONOTONIC time, so instances whose tokens
// fall into the same slot share one timer interrupt and one wake-up: a
// shot is at most one resolution late, and an idle generator wakes at most
// once per resolution.
type fdWaiter struct {
	f          *os.File
	rc         syscall.RawConn
	fd         int
	base       int64 // CLOCK_MONOTONIC at the run's start
	resolution int64
	buf        [8]byte
	readFn     func(uintptr) bool
	watched    <-chan struct{} // Done channel of the watched context
	unwatch    func() bool
	aborting   chan struct{} // closed when the interruption has run
}

// newWaiter returns a timerfd waiter for a run that started at base
// (CLOCK_MONOTONIC nanoseconds), or a timer waiter where timerfd is not
// available.
func newWaiter(base int64, resolution time.Duration) waiter {
	if base == 0 {
		return newTimerWaiter()
	}
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return newTimerWaiter()
	}
	f := os.NewFile(uintptr(fd), "timerfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return newTimerWaiter()
	}
	w := &fdWaiter{f: f, rc: rc, fd: fd, base: base, resolution: max(int64(resolution), 1)}
	w.readFn = w.read
	return w
}

// read consumes the expiration, reporting false (wait for the poller) while
// there is none. It must read even on the first call: RawConn.Read clears
// the poller's pending readiness before calling it, so a timer that fired
// between arming and waiting is seen only by reading.
func (w *fdWaiter) read(fd uintptr) bool {
	_, err := unix.Read(int(fd), w.buf[:])
	return err != unix.EAGAIN
}

func (w *fdWaiter) wait(ctx context.Context, at int64, d time.Duration) bool {
	if done := ctx.Done(); done != w.watched {
		if w.unwatch != nil {
			// An interruption already started runs in its own goroutine:
			// let it finish before clearing the deadline.
			if !w.unwatch() {
				<-w.aborting
			}
			w.unwatch = nil
		}
		w.watched = done
		w.f.SetReadDeadline(time.Time{})
		if done != nil {
			finished := make(chan struct{})
			w.aborting = finished
			w.unwatch = context.AfterFunc(ctx, func() {
				defer close(finished)
				w.f.SetReadDeadline(time.Unix(1, 0))
			})
		}
	}
	if ctx.Err() != nil {
		return false
	}
	slot := (at + w.resolution - 1) / w.resolution * w.resolution
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(w.base + slot)}
	if err := unix.TimerfdSettime(w.fd, unix.TFD_TIMER_ABSTIME, &spec, nil); err != nil {
		time.Sleep(d)
		return ctx.Err() == nil
	}
	if err := w.rc.Read(w.readFn); err != nil {
		// Canceled: disarm so a late expiration is not read next time.
		unix.TimerfdSettime(w.fd, 0, &unix.ItimerSpec{}, nil)
		return false
	}
	return true
}

func (w *fdWaiter) close() {
	if w.unwatch != nil {
		w.unwatch()
	}
	w.f.Close()
}
