//go:build !linux

package main

import "time"

// wakeLoop sleeps on an absolute grid of period for d and returns the
// number of wake-ups, calling each after every wake-up.
func wakeLoop(period, d time.Duration, each func() error) (int, error) {
	start := time.Now()
	wakes := 0
	for next := period; next < d; next += period {
		time.Sleep(time.Until(start.Add(next)))
		wakes++
		if err := each(); err != nil {
			return wakes, err
		}
	}
	return wakes, nil
}
