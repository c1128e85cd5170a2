// Package aggregate turns shots into numbers.
//
// Every shot produces a Sample with three times on the run's monotonic
// clock: Intended (the schedule's token), Sent (when the gun was called) and
// Done. Latency is Done-Intended, corrected for coordinated omission: a
// server that stalls delays every shot queued behind it, and those delays
// count. Service time is Done-Sent, what the server alone took. Lateness is
// Sent-Intended, how far the generator fell behind its schedule.
//
// Guns may also split a shot into pandora's phases (Sample.Connect, Send,
// Receive; the rest of the service time is the wait for the first byte),
// which phout writes.
//
// An Aggregator takes samples through Report, which never blocks: when its
// buffer is full the sample is dropped and counted, and the count is part
// of the result. A single goroutine records samples into HDR histograms
// (microsecond resolution, 3 significant digits) overall, per tag and per
// result code, closes a timeline entry every second, evaluates Rules
// (thresholds and autostop) and feeds per-sample sinks such as phout.
//
// A Result serializes its histograms in HdrHistogram's compressed V2
// encoding, so results of several replicas merge without loss.
package aggregate
