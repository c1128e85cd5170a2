// Package resource is the LoadTest resource and its built-in controllers:
// a load test is applied like any other object, and the processes of the
// service run it and write its progress and results into its status.
//
// # The resource
//
// A LoadTest's spec is the configuration of `capstan loadtest run`
// (config.Spec: pools, thresholds, duration, …) inline, so the body of a
// config file drops in under spec, plus two fields of its own:
//
//   - parallelism: N spreads the load over N live members, each running
//     the i-th of N shares of every schedule (schedule.Share) from a
//     common start time; default 1.
//   - cancel: true stops the test: a pending test never starts, a running
//     one stops at once (shots in flight are canceled) and ends Cancelled
//     with the results so far.
//
// The spec is decoded strictly: an unknown field or a value of the wrong
// type does not make the object unreadable but fails the test with
// status.reason InvalidSpec and a message naming the field
// ("spec.pools[0].rps[0].duration: …"), as does every other invalid value.
// Environment placeholders (${env:NAME}) are not expanded in a resource,
// and report files are refused (spec.report): results go to the status,
// never to files of the process that happens to run the test. Whoever may
// write a LoadTest must not get to read the runners' files either: files
// (ammo files, descriptor sets, TLS files) are read only when the
// controller has a files directory (Options.Dir, `capstan run
// --loadtest-dir DIR`), only by relative paths that stay inside it, also
// through symbolic links; other specs that name files fail as InvalidSpec
// with the field at fault ("spec.pools[0].ammo.file: …"). Runners apply
// the same checks to the parts they are given, and open every file
// through an os.Root of the directory (files.Root), so nothing outside it
// is read whatever a path or link says.
//
// Status: phase (Pending, Running, Succeeded, Failed, Cancelled) with a
// reason and message, startTime and endTime, observedGeneration and
// runGeneration, the parts and where they run, progress (refreshed about
// every second: elapsed time, target and achieved RPS, shots in flight,
// p50/p99 so far, errors), results when the run ended (requests, achieved
// RPS, latency quantiles from the intended time and from the send time,
// lateness, errors by class and counts by code, overdue, discarded,
// dropped and interrupted shots, the lossless HDR histograms), the
// verdict of the thresholds and autostop rules with the failed rules, and
// the conditions Ready and Complete. A run that completed but failed a
// threshold is Failed with reason ThresholdsFailed (Autostopped when an
// autostop rule ended it); Succeeded means it completed and passed.
//
// # A test runs once
//
// Like a Kubernetes Job, a LoadTest runs at most once. The generation
// that starts running is status.runGeneration; later spec changes, other
// than cancel, change nothing (status.observedGeneration still follows
// them): create a new LoadTest to run again. The one exception is a spec
// rejected before it ran (phase Failed, reason InvalidSpec, runGeneration
// 0): a corrected spec runs.
//
// # How it runs
//
// Two controllers share the work, and both are set up by
// SetupWithManager:
//
//   - The LoadTest controller (leader-elected like any controller)
//     validates a new test, waits until at least N members of the
//     runners' Membership are live (phase Pending, Ready=False with
//     reason WaitingForMembers), then puts a finalizer on the test and
//     writes the plan into its status with a compare-and-swap: the
//     parts, the member of each, and the start time (StartDelay ahead
//     for N > 1, at once for one part). The LoadTestPart objects (owned
//     by the LoadTest, named NAME-i) are created from the stored plan
//     only, so replicas that coordinate at the same time (without leader
//     election) still agree on one plan. It then mirrors the parts'
//     progress into the test's status (at most once per
//     ProgressInterval), forwards spec.cancel and deletion to the parts
//     (part spec.cancel), and when every part has ended merges their
//     histograms (aggregate.Result.Merge: lossless, so the merged
//     quantiles are those of the union of all shots) and judges the
//     whole-run thresholds on the merged result.
//   - The part runner runs on every replica. It runs the parts assigned
//     to its own Member, each in a goroutine it owns (never inside a
//     reconcile), from the part's start time, writes progress to the
//     part every ProgressInterval and, at the end, its serialized result
//     (HDR histograms, counters) and final phase. It cancels a part at
//     once when the part's spec.cancel is set or the part disappears.
//
// When one part fails or an autostop rule fires in one part, the others
// are cancelled: the test is over. Windowed (autostop) rules are
// evaluated by each part on its own share, so "rps" and "errors" autostop
// rules see the share's numbers; whole-run thresholds are judged on the
// merged result. The start of a parallel run is as synchronized as the
// members' wall clocks; a part that could not even be created by its
// start plus StartDelay fails the run (reason PartLost) rather than
// merging shares that did not run together.
//
// # Cancellation, deletion and restarts
//
// A deleted LoadTest keeps its finalizer until every part has ended: the
// coordinator cancels the parts, their runners stop them (shots in flight
// are canceled) and report, and only then does the LoadTest disappear
// (its parts follow through the garbage collector).
//
// A run never hangs on a runner that is gone. A runner that stops with
// its process reports its parts Failed with reason Interrupted and the
// results so far; a runner whose Member session ends stops its parts. A
// part whose Member is gone (deleted on stop, or reaped by the others once
// its lease expired after a crash) is marked Interrupted by the
// coordinator (gone means gone from the store, not merely unseen by this
// replica yet), and the test ends Failed with reason Interrupted. A
// process that restarts registers a new Member, so it never resumes the
// parts of its previous life. After a crash the wait is the Member's lease
// (15s by default): until then the process cannot be told from a slow one.
package resource
