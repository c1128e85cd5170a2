package main

import (
	"context"
	"fmt"
	"time"

	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/memory"
)

// memoryPart measures the runtime over the memory store.
func memoryPart(ctx context.Context, c config, rep *report) error {
	if c.has("e2e") || c.has("feed") {
		st := memory.New(newScheme(), memory.WithHistory(c.memoryHistory))
		defer st.Close(ctx)
		fmt.Printf("memory: creating %d objects\n", c.n)
		objs, err := populate(ctx, st, c.n, c.writers)
		if err != nil {
			return err
		}
		if c.has("e2e") {
			if err := memoryE2E(ctx, c, rep, st, objs); err != nil {
				return err
			}
		}
		if c.has("feed") {
			if err := feedPart(ctx, c, rep, st, objs); err != nil {
				return err
			}
		}
	}
	if c.has("sync") {
		return memorySync(ctx, c, rep)
	}
	return nil
}

// memoryE2E measures both loops driven by writes to the memory store.
func memoryE2E(ctx context.Context, c config, rep *report, st store.Store, objs []*Item) error {
	const be = "memory"
	var value int64 = 1_000_000

	alone, err := writeRate(ctx, c, st, all(objs), value)
	if err != nil {
		return err
	}
	value += 1000
	rep.add(be, "store writes, nothing watching", "writes/s", alone.writes, fmt.Sprintf("%d writers", c.writers))
	rep.add(be, "  CPU per write", "µs", alone.cpu, "")

	fmt.Println("memory: Capstan controller")
	tr := newTracker()
	capstan := &capstanLoop{st: st, tr: tr, workers: c.workers, objects: len(objs)}
	if err := capstan.start(ctx); err != nil {
		return err
	}
	capR, err := throughput(ctx, c, st, all(objs), tr, value)
	value += 1000
	if err != nil {
		return err
	}
	capRate := rep.add(be, "Capstan controller, noop reconcile", "reconciles/s", capR.reconciles, fmt.Sprintf("%d workers, first write → last reconcile", c.workers))
	rep.add(be, "  store writes in the same rounds", "writes/s", capR.writes, "")
	capCPU := rep.add(be, "  CPU per update (write, watch, reconcile)", "µs", capR.cpu, "")
	lat, err := latency(ctx, st, objs, tr, c.latency, value, c.roundTimeout)
	value += int64(c.latency)
	if err != nil {
		return err
	}
	if err := capstan.stop(); err != nil {
		return err
	}
	p50, p99 := latencyRows(rep, be, "Capstan controller", lat, c.rounds)
	rep.set("memory_reconciles_per_sec", "%.0f", capRate)
	rep.set("memory_latency_p50_us", "%.0f", micros(p50))
	rep.set("memory_latency_p99_us", "%.0f", micros(p99))

	fmt.Println("memory: bare watch → work queue loop")
	tr = newTracker()
	bare := &bareLoop{st: st, tr: tr, workers: c.workers}
	if err := bare.start(ctx); err != nil {
		return err
	}
	bareR, err := throughput(ctx, c, st, all(objs), tr, value)
	value += 1000
	if err != nil {
		return err
	}
	bareRate := rep.add(be, "bare watch → client-go queue loop", "reconciles/s", bareR.reconciles, "same workers and writers")
	rep.add(be, "  store writes in the same rounds", "writes/s", bareR.writes, "")
	bareCPU := rep.add(be, "  CPU per update (write, watch, reconcile)", "µs", bareR.cpu, "")
	blat, err := latency(ctx, st, objs, tr, c.latency, value, c.roundTimeout)
	if err != nil {
		return err
	}
	if err := bare.stop(); err != nil {
		return err
	}
	latencyRows(rep, be, "bare loop", blat, c.rounds)
	rep.set("memory_throughput_vs_bare", "%.2f", capRate/bareRate)
	rep.set("memory_cpu_per_update_us", "%.2f", capCPU)
	rep.set("memory_cpu_per_update_bare_us", "%.2f", bareCPU)
	return nil
}

// feedPart measures what the loops cost by themselves: both consume the
// same pre-built watch events as fast as they can, with no store writes
// or store watch to share the CPU with (the writers bound both loops in
// memoryE2E).
func feedPart(ctx context.Context, c config, rep *report, st store.Store, objs []*Item) error {
	fmt.Println("loops over pre-built watch events")
	capFeed, err := pipeline(ctx, c, st, objs, func(s store.Store, tr *tracker) loop {
		return &capstanLoop{st: s, tr: tr, workers: c.workers, objects: len(objs)}
	})
	if err != nil {
		return err
	}
	bareFeed, err := pipeline(ctx, c, st, objs, func(s store.Store, tr *tracker) loop {
		return &bareLoop{st: s, tr: tr, workers: c.workers}
	})
	if err != nil {
		return err
	}
	capF := rep.add("-", "pre-built events: Capstan informer → controller", "reconciles/s", capFeed, fmt.Sprintf("%d workers, no store in the loop", c.workers))
	bareF := rep.add("-", "pre-built events: bare channel → client-go queue", "reconciles/s", bareFeed, "")
	rep.add("-", "client-go queue alone (keys added directly)", "items/s", queueOnly(c, objs), "")
	rep.set("overhead_vs_bare_queue", "%.2f", bareF/capF)
	return nil
}

// memorySync measures an informer's initial sync of syncN objects against
// reading them with List, in one page and in the informer's pages.
func memorySync(ctx context.Context, c config, rep *report) error {
	const be = "memory"
	st := memory.New(newScheme())
	defer st.Close(ctx)
	fmt.Printf("memory: creating %d objects for the cache sync\n", c.syncN)
	if _, err := populate(ctx, st, c.syncN, c.writers); err != nil {
		return err
	}
	var raw, synced, ratio, perObj []float64
	for range c.syncRounds {
		r, err := listAll(ctx, st, c.syncN, 0)
		if err != nil {
			return err
		}
		s, b, err := informerSync(ctx, st, c.syncN)
		if err != nil {
			return err
		}
		raw, synced, perObj = append(raw, seconds(r)), append(synced, seconds(s)), append(perObj, b)
		ratio = append(ratio, s.Seconds()/r.Seconds())
	}
	// What the informer reads: the same List in pages (once; it is slow
	// on large kinds and the informer rounds above already include it).
	paged, err := listAll(ctx, st, c.syncN, informerPageSize)
	if err != nil {
		return err
	}
	note := fmt.Sprintf("%d objects", c.syncN)
	rep.add(be, "raw read: one List of every object", "s", raw, note)
	rep.add(be, "informer initial sync", "s", synced, note)
	r := rep.add(be, "  sync / one List", "ratio", ratio, "")
	b := rep.add(be, "  heap per cached object", "bytes", perObj, "")
	rep.add(be, "List in the informer's pages (what sync reads)", "s", []float64{seconds(paged)}, fmt.Sprintf("pages of %d", informerPageSize))
	rep.set("sync_vs_raw_ratio_memory", "%.2f", r)
	rep.set("bytes_per_cached_object_memory", "%.0f", b)
	return nil
}

// latencyRows adds p50 and p99 rows (one value per group of samples) and
// returns the percentiles over all samples.
func latencyRows(rep *report, be, what string, lat []time.Duration, groups int) (p50, p99 time.Duration) {
	var g50, g99 []float64
	size := max(len(lat)/max(groups, 1), 1)
	for i := 0; i+size <= len(lat); i += size {
		g := lat[i : i+size]
		g50 = append(g50, micros(percentile(g, 50)))
		g99 = append(g99, micros(percentile(g, 99)))
	}
	unit, scale := "µs", 1.0
	if percentile(lat, 50) > 10*time.Millisecond {
		unit, scale = "ms", 1000
	}
	for i := range g50 {
		g50[i], g99[i] = g50[i]/scale, g99[i]/scale
	}
	note := fmt.Sprintf("%d samples", len(lat))
	rep.add(be, what+": write ack → reconcile start p50", unit, g50, note)
	rep.add(be, what+": write ack → reconcile start p99", unit, g99, "")
	return percentile(lat, 50), percentile(lat, 99)
}
