package main

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/capstanhq/capstan/pkg/coordination"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"

	"github.com/capstanhq/capstan/test/e2e/api"
)

// setupLockLoop adds the Locks runnable and the loop that takes the lock
// and appends to the Ledger inside its critical sections.
func (op *operator) setupLockLoop() error {
	locks, err := coordination.NewLocks(coordination.LocksConfig{
		Store: op.st, Membership: op.membership, Logger: op.log.WithName("locks"),
	})
	if err != nil {
		return err
	}
	if err := op.mgr.Add(locks); err != nil {
		return err
	}
	return op.mgr.Add(runnable(func(ctx context.Context) error { op.lockLoop(ctx, locks); return nil }))
}

func (op *operator) lockLoop(ctx context.Context, locks *coordination.Locks) {
	for ctx.Err() == nil {
		held, err := locks.Acquire(ctx, api.LockName, coordination.WithTTL(op.cfg.lockTTL))
		if err != nil {
			if ctx.Err() == nil {
				op.log.Info("could not acquire the lock; retrying", "error", err.Error())
				sleep(ctx, 200*time.Millisecond)
			}
			continue
		}
		op.lockToken.Store(held.Token)
		member := op.currentMember()
		op.log.Info("lock acquired", "token", held.Token, "member", member)
		op.criticalSection(ctx, held, member)
		op.lockToken.Store(0)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), op.cfg.storeTimeout)
		err = held.Release(rctx)
		cancel()
		if err != nil {
			op.log.Info("lock release failed", "token", held.Token, "error", err.Error())
		} else {
			op.log.Info("lock released", "token", held.Token)
		}
		// Let the others have a turn.
		sleep(ctx, op.cfg.lockGap/2+rand.N(op.cfg.lockGap))
	}
}

// criticalSection appends lockSteps entries to the Ledger, spread over
// lockHold. It deliberately does not stop when the lock's context ends:
// the point of the test is that the store refuses the writes of a holder
// that lost the lock while it was paused or cut off, even when the holder
// does not notice. It stops at the first refusal, or when the process
// stops.
func (op *operator) criticalSection(ctx context.Context, held *coordination.Held, member string) {
	f := store.Fence{Name: held.FenceName(), Token: held.Token}
	for step := 0; step < op.cfg.lockSteps; step++ {
		if step > 0 && !sleep(ctx, op.cfg.lockHold/time.Duration(op.cfg.lockSteps)) {
			return
		}
		e := api.LedgerEntry{Token: held.Token, Replica: op.cfg.replica, Member: member, Step: step, Final: step == op.cfg.lockSteps-1}
		if !op.appendLedger(ctx, f, e) {
			return
		}
	}
}

// appendLedger appends e to the Ledger with a fenced compare-and-swap,
// retrying version conflicts and unreachable-store errors until the write
// is accepted (true) or refused (false; recorded as a Refusal) or the
// process stops (false). A write whose answer was lost may have been
// applied: an entry already in the Ledger counts as accepted, so a retry
// never appends it twice.
func (op *operator) appendLedger(ctx context.Context, f store.Fence, e api.LedgerEntry) bool {
	key := meta.Key{Namespace: api.Namespace, Name: api.LedgerName}
	for ctx.Err() == nil {
		ledger := &api.Ledger{}
		err := op.st.Get(ctx, key, ledger)
		write := op.st.Update
		if errs.IsNotFound(err) {
			ledger = &api.Ledger{ObjectMeta: meta.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
			write, err = op.st.Create, nil
		}
		if err == nil && hasEntry(ledger.Spec.Entries, e) {
			return true
		}
		if err == nil && op.cfg.unfencedLock {
			// The negative control: a plain compare-and-swap.
			ledger.Spec.Entries = append(ledger.Spec.Entries, e)
			if err = write(ctx, ledger); err == nil {
				return true
			}
		} else if err == nil {
			if refused, have := refusedBy(ledger, f); refused {
				op.refused(ctx, f, ledger, e.Member, errs.New(errs.Conflict, "fenced write refused: %s has token %d, this writer holds %d", f.Name, have, f.Token))
				return false
			}
			ledger.Spec.Entries = append(ledger.Spec.Entries, e)
			err = fencedWrite(ctx, ledger, f, write)
			if err == nil {
				return true
			}
		}
		if errs.IsConflict(err) || errs.IsAlreadyExists(err) {
			continue // read again: either a version race or a newer holder
		}
		if ctx.Err() == nil {
			op.log.Info("ledger write failed; retrying", "token", f.Token, "step", e.Step, "error", err.Error())
			sleep(ctx, 100*time.Millisecond)
		}
	}
	return false
}

// hasEntry reports whether entries hold e (its token and step identify it).
func hasEntry(entries []api.LedgerEntry, e api.LedgerEntry) bool {
	for i := len(entries) - 1; i >= 0; i-- {
		if entries[i].Token == e.Token && entries[i].Step == e.Step {
			return true
		}
	}
	return false
}
