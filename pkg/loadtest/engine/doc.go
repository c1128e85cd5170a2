// Package engine runs load tests.
//
// An Engine is built from a config.Spec: for each pool it builds the shot
// schedule, the instance start-up schedule, the ammo provider and the gun
// factory. Run starts instances on the start-up schedule; each instance
// repeatedly takes the next token from the pool's schedule, waits until the
// token's intended time, takes ammo and shoots, then reports a sample with
// the token's intended time, the send time and the completion time. An
// instance that is busy when a token falls due takes it late, and the
// lateness shows in the corrected latency: the engine never hides a server
// that cannot keep up (unless a pool opts into discardOverflow, which skips
// shots already later than overdueAfter and counts them).
//
// Instances sleep on a kernel timer (timerfd on Linux) whose deadlines are
// rounded up to a grid (timerResolution, default 500µs), so shots are at
// most that late while the generator has CPU to spare, and instances due in
// the same slot share one wake-up. The Go runtime's own timers would round
// an idle process's sleep to whole milliseconds; "timer: coarse" uses them
// for the least CPU.
//
// A run ends when every pool's schedule or ammo is used up, when the spec's
// duration passes, or when an autostop rule fires; in these cases the shots
// in flight complete. When the caller's context ends, shots in flight are
// canceled and not reported (they are counted as interrupted), and Run
// still returns the result so far.
//
// A run can be one share of a distributed test: Options.Share gives this
// replica the i-th of n parts of every schedule (start-up included), and
// Options.StartAt a wall-clock start common to all replicas; their results
// merge losslessly with aggregate.Result.Merge.
package engine
