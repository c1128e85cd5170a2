//go:build !linux

package engine

func newWaiter() waiter { return newTimerWaiter() }
