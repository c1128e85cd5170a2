//go:build race

package main

// Benchmarks built with the race detector measure the detector.
func init() { panic("hack/bench/runtime must not be built with -race") }
