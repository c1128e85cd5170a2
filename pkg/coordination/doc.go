// Package coordination lets the replicas of a service agree, through the
// store they already use, on who leads, who holds a lock, which processes
// are alive, which providers of a service exist and which replica owns
// which shard of a controller's keys.
//
// Everything is a resource (Lease, Member, Lock, Provider), so it can be
// inspected with `capstan get` and watched like any other kind. The rules
// (DESIGN.md "Coordination model"):
//
//   - Time: a record is expired when it has not changed for its duration as
//     measured by the observer's own monotonic clock since it first saw that
//     version — never by comparing timestamps written by different
//     machines (client-go's leader-election rule).
//   - Fencing: every Lease and Lock carries a token that grows by one on
//     every acquisition and never goes back (their documents are never
//     deleted, only released). A write guarded with store.WithFence fails
//     with errs.Conflict once a holder with a higher token has written the
//     same object, so a paused holder that wakes up cannot overwrite its
//     successor's work.
//   - Members: each process registers a Member named name-<random id> and
//     renews it; any member that sees another one expired deletes it with a
//     compare-and-swap. Providers point at their Member with an owner
//     reference, so the garbage collector removes them with it; Leases and
//     Locks name their holder, and a holder whose Member is gone is treated
//     as expired at once.
//   - Waiting is driven by watch events, not polling: a blocked Acquire
//     wakes when the lock changes, when its holder's Member disappears, or
//     when the holder's time runs out on the waiter's clock.
package coordination
