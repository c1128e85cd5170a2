//go:build linux

package engine

import (
	"context"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fdWaiter waits on a timerfd registered with the runtime's network
// poller. The kernel's high-resolution timer wakes the poller at the
// deadline to the microsecond, where a runtime timer would round the
// poller's sleep to whole milliseconds; it costs two system calls a wait.
type fdWaiter struct {
	f       *os.File
	rc      syscall.RawConn
	fd      int
	armed   bool
	buf     [8]byte
	readFn  func(uintptr) bool
	watched context.Context
	unwatch func() bool
}

// newWaiter returns a timerfd waiter, or a timer waiter where timerfd is
// not available.
func newWaiter() waiter {
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
	w := &fdWaiter{f: f, rc: rc, fd: fd}
	w.readFn = w.read
	return w
}

// read consumes the expiration. Right after arming it reports false
// without a system call, so the poller waits: the timer cannot have fired
// yet.
func (w *fdWaiter) read(fd uintptr) bool {
	if w.armed {
		w.armed = false
		return false
	}
	_, err := unix.Read(int(fd), w.buf[:])
	return err != unix.EAGAIN
}

func (w *fdWaiter) wait(ctx context.Context, d time.Duration) bool {
	if ctx != w.watched {
		if w.unwatch != nil {
			w.unwatch()
		}
		w.watched = ctx
		w.f.SetReadDeadline(time.Time{})
		w.unwatch = context.AfterFunc(ctx, func() { w.f.SetReadDeadline(time.Unix(1, 0)) })
	}
	if ctx.Err() != nil {
		return false
	}
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	if err := unix.TimerfdSettime(w.fd, 0, &spec, nil); err != nil {
		time.Sleep(d)
		return ctx.Err() == nil
	}
	w.armed = true
	if err := w.rc.Read(w.readFn); err != nil {
		// Canceled: disarm so a late expiration is not read next time.
		unix.TimerfdSettime(w.fd, 0, &unix.ItimerSpec{}, nil)
		w.armed = false
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
