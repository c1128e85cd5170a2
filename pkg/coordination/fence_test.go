package coordination

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// writeItem reads the item afresh (so that only the fence can refuse the
// write) and writes n into it with opts.
func writeItem(ctx context.Context, st store.Store, key meta.Key, n int, opts ...store.WriteOption) error {
	it := &item{}
	if err := st.Get(ctx, key, it); err != nil {
		return err
	}
	it.Spec.N = n
	return st.Update(ctx, it, opts...)
}

func itemN(t testing.TB, st store.Store, key meta.Key) (int, map[string]int64) {
	t.Helper()
	it := &item{}
	if err := st.Get(context.Background(), key, it); err != nil {
		t.Fatal(err)
	}
	return it.Spec.N, it.Fences
}

// refused checks that err is the store's fenced-write refusal.
func refused(t testing.TB, err error) {
	t.Helper()
	if !errs.IsConflict(err) || errs.FieldOf(err) != "metadata.fences" {
		t.Fatalf("stale fenced write = %v (field %q), want Conflict on metadata.fences", err, errs.FieldOf(err))
	}
}

// A lock holder that lost its lock cannot overwrite what its successor
// wrote under the lock.
func TestFenceLocks(t *testing.T) {
	checkLeaks(t)
	st := newShardStore(t)
	key := createItems(t, st, "guarded")[0]
	a, b := newLockProcess(t, st, st), newLockProcess(t, st, st)
	ctx := context.Background()
	ha, err := a.locks.Acquire(ctx, "guard")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeItem(ctx, st, key, 1, ha.Fence()); err != nil {
		t.Fatalf("holder's fenced write = %v", err)
	}
	// a's member dies (a stalls long enough to be reaped): b takes over.
	deleteMember(t, st, a.m.Session().Name)
	hb, err := b.locks.Acquire(ctx, "guard")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeItem(ctx, st, key, 2, hb.Fence()); err != nil {
		t.Fatalf("successor's fenced write = %v", err)
	}
	// a wakes up and writes with its old token.
	refused(t, writeItem(ctx, st, key, 99, ha.Fence()))
	n, fences := itemN(t, st, key)
	if n != 2 || fences[hb.FenceName()] != hb.Token {
		t.Fatalf("item = %d, fences %v; want 2 under token %d", n, fences, hb.Token)
	}
	if err := hb.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// A leader that lost the lease cannot overwrite what its successor wrote.
func TestFenceElector(t *testing.T) {
	checkLeaks(t)
	st := newShardStore(t)
	key := createItems(t, st, "led")[0]
	ctx := context.Background()
	a := runElector(t, newElector(t, st, "a"), nil)
	eventually(t, "a leads", func() (bool, string) { return a.e.IsLeader(), "" })
	stale := store.WithFence(a.e.FenceName(), a.e.Token())
	if err := writeItem(ctx, st, key, 1, stale); err != nil {
		t.Fatal(err)
	}
	if err := a.stop(t); err != nil { // no release: b takes over after expiry
		t.Fatal(err)
	}
	b := runElector(t, newElector(t, st, "b"), nil)
	eventually(t, "b leads", func() (bool, string) { return b.e.IsLeader(), "" })
	if b.e.FenceName() != a.e.FenceName() || b.e.Token() <= 1 {
		t.Fatalf("b fences as %s/%d", b.e.FenceName(), b.e.Token())
	}
	if err := writeItem(ctx, st, key, 2, store.WithFence(b.e.FenceName(), b.e.Token())); err != nil {
		t.Fatal(err)
	}
	refused(t, writeItem(ctx, st, key, 99, stale))
	if n, _ := itemN(t, st, key); n != 2 {
		t.Fatalf("item = %d, want 2", n)
	}
}

// A replica that stalls mid-reconcile loses its shard; the replica that
// takes it over reconciles the key; the stalled reconcile's fenced write
// is then refused.
func TestFenceSharder(t *testing.T) {
	checkLeaks(t)
	st := newShardStore(t)
	key := createItems(t, st, "sharded")[0]
	o := shardOpts{shards: 1, lease: 2 * time.Second, rebalance: 100 * time.Millisecond}
	stalled := make(chan struct{})
	resume := make(chan struct{})
	staleResult := make(chan error, 1)
	first := true
	g1 := newGate(st, "r1-members")
	r1 := startReplica(t, st, "r1", shardOpts{shards: o.shards, lease: o.lease, rebalance: o.rebalance, memberStore: g1},
		func(ctx context.Context, req controller.Request) (controller.Result, error) {
			if !first {
				return controller.Result{}, nil
			}
			first = false
			if err := writeItem(ctx, st, req, 1, FenceFrom(ctx)); err != nil {
				staleResult <- fmt.Errorf("first write: %w", err)
				return controller.Result{}, nil
			}
			close(stalled)
			<-resume
			staleResult <- writeItem(ctx, st, req, 99, FenceFrom(ctx))
			return controller.Result{}, nil
		})
	runtimetest.Recv(t, stalled, "r1 to reconcile")
	_, fences := itemN(t, st, key)
	t1 := fences["Lease/"+testNS+"/items-shard-0"]

	wrote := make(chan int64, 4)
	r2 := startReplica(t, st, "r2", o, func(ctx context.Context, req controller.Request) (controller.Result, error) {
		if err := writeItem(ctx, st, req, 2, FenceFrom(ctx)); err != nil {
			return controller.Result{}, err
		}
		var wo store.WriteOptions
		FenceFrom(ctx)(&wo)
		wrote <- wo.Fence.Token
		return controller.Result{}, nil
	})
	g1.Pause() // r1's membership stalls: its member is reaped, r2 takes the shard
	t2 := runtimetest.Recv(t, wrote, "r2 to reconcile the key")
	if t2 <= t1 {
		t.Fatalf("r2's token %d is not above r1's %d", t2, t1)
	}
	close(resume)
	refused(t, runtimetest.Recv(t, staleResult, "r1's stale write"))
	if n, _ := itemN(t, st, key); n != 2 {
		t.Fatalf("item = %d, want r2's 2", n)
	}
	g1.Resume()
	r2.stop(t)
	r1.stop(t)
}
