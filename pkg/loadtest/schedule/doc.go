// Package schedule says when a load generator shoots.
//
// A Segment is a closed-form run of tokens: token k's intended time is a
// formula of k alone (k/rps for const, the root of the integrated rate for
// line), never the previous token's time plus an interval, so a schedule does
// not drift however many tokens it yields and every replica computes the same
// times. A Plan is a sequence of segments (the composite schedule); its
// Iterator hands out tokens one by one, safe for concurrent use, and may be
// restricted to the i-th of n shares so that n replicas together produce the
// plan exactly once. Rates are float64 so fractional RPS (0.5 per second) is
// exact.
//
// The same plans describe instance start-up (pandora's startup schedule):
// each token is the start of one more instance.
package schedule
