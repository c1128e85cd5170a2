//go:build linux

package main

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// wakeLoop sleeps on an absolute grid of period for d, as the engine's
// precise timer does (a timerfd in the runtime's network poller), calls
// each after every wake-up, and returns the number of wake-ups.
func wakeLoop(period, d time.Duration, each func() error) (int, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return 0, err
	}
	f := os.NewFile(uintptr(fd), "timerfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, err
	}
	next, end := ts.Nano(), ts.Nano()+int64(d)
	var buf [8]byte
	wakes := 0
	for next < end {
		next += int64(period)
		spec := unix.ItimerSpec{Value: unix.NsecToTimespec(next)}
		if err := unix.TimerfdSettime(fd, unix.TFD_TIMER_ABSTIME, &spec, nil); err != nil {
			return wakes, err
		}
		err := rc.Read(func(fd uintptr) bool {
			_, err := unix.Read(int(fd), buf[:])
			return err != unix.EAGAIN
		})
		if err != nil {
			return wakes, err
		}
		wakes++
		if err := each(); err != nil {
			return wakes, err
		}
	}
	return wakes, nil
}
