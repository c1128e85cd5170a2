//go:build !linux

package engine

import "time"

func monotonicNow() int64 { return 0 }

func newWaiter(int64, time.Duration) waiter { return newTimerWaiter() }
