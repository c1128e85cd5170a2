package main

import (
	"context"
	"fmt"
	"time"

	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// feedStore is a store whose Watch returns a channel that the benchmark
// fills with pre-built events, so that a loop's own cost shows without
// the cost of writes and of the store's watch: every loop that watches
// through it consumes exactly the same stream.
type feedStore struct {
	store.Store
	watches chan chan<- store.Event
}

func newFeedStore(st store.Store) *feedStore {
	return &feedStore{Store: st, watches: make(chan chan<- store.Event, 16)}
}

// Watch implements store.Watcher: the channel is the next one feed fills;
// it is never closed (the consumer stops by cancelling ctx).
func (f *feedStore) Watch(_ context.Context, _ string, _ store.WatchOptions) (<-chan store.Event, error) {
	ch := make(chan store.Event, 64) // the memory store's watch buffer
	f.watches <- ch
	return ch, nil
}

// feedRoundsFactor multiplies the rounds of feedRounds: its rounds are
// short, so more of them make a steadier median.
const feedRoundsFactor = 4

// feedRounds sends every object once per round, as a Modified event with a
// new resourceVersion, to the watch the loop opened, and returns per round
// the events per second from the first send to the last reconcile start.
func feedRounds(c config, f *feedStore, objs []*Item, tr *tracker) ([]float64, error) {
	var ch chan<- store.Event
	select {
	case ch = <-f.watches:
	case <-time.After(time.Minute):
		return nil, fmt.Errorf("the loop opened no watch")
	}
	var out []float64
	for r := range c.rounds * feedRoundsFactor {
		events := make([]store.Event, len(objs))
		for i, o := range objs {
			cp := *o
			rv := meta.FormatResourceVersion(1<<40 + uint64(r*len(objs)+i))
			cp.ResourceVersion = rv
			events[i] = store.Event{Type: store.Modified, Object: &cp, Revision: rv}
		}
		done := tr.arm(int64(len(objs)))
		t0 := time.Now()
		for _, ev := range events {
			ch <- ev
		}
		select {
		case <-done:
		case <-time.After(c.roundTimeout):
			return nil, fmt.Errorf("round %d: %d of %d reconciles after %v", r, tr.count.Load(), len(objs), c.roundTimeout)
		}
		out = append(out, float64(len(objs))/tr.lastHit().Sub(t0).Seconds())
	}
	return out, nil
}

// pipeline runs l over a feedStore on st and measures it with feedRounds.
func pipeline(ctx context.Context, c config, st store.Store, objs []*Item, newLoop func(store.Store, *tracker) loop) ([]float64, error) {
	f := newFeedStore(st)
	tr := newTracker()
	l := newLoop(f, tr)
	if err := l.start(ctx); err != nil {
		return nil, err
	}
	rates, err := feedRounds(c, f, objs, tr)
	if serr := l.stop(); err == nil {
		err = serr
	}
	return rates, err
}
