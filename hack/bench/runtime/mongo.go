package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/embedded"
	mongostore "github.com/capstanhq/capstan/pkg/store/mongo"
)

// mongoPart measures the runtime over the Mongo store, on an embedded
// server started here (or on -mongo-uri).
func mongoPart(ctx context.Context, c config, rep *report) error {
	uri := c.mongoURI
	if uri == "" {
		dir, err := os.MkdirTemp("", "capstan-runtime-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		srv, err := embedded.New(embedded.Options{DataDir: dir, Addr: "127.0.0.1:0"})
		if err != nil {
			return err
		}
		if err := srv.Start(ctx); err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = srv.Stop(sctx)
		}()
		uri = srv.URI()
		fmt.Printf("mongo: embedded server on %s\n", uri)
	}
	mc := c
	mc.rounds, mc.writers = c.mongoRounds, c.mongoWriters
	st, cleanup, err := openMongo(ctx, uri)
	if err != nil {
		return err
	}
	defer cleanup()
	fmt.Printf("mongo: creating %d objects\n", c.mongoN)
	t0 := time.Now()
	objs, err := populate(ctx, st, c.mongoN, mc.writers)
	if err != nil {
		return err
	}
	rep.add("mongo", "store creates", "creates/s", []float64{float64(c.mongoN) / time.Since(t0).Seconds()}, fmt.Sprintf("%d objects, %d writers", c.mongoN, mc.writers))
	if c.has("sync") {
		if err := mongoSync(ctx, mc, rep, st, len(objs)); err != nil {
			return err
		}
	}
	if c.has("e2e") {
		if err := mongoE2E(ctx, mc, rep, st, objs); err != nil {
			return err
		}
	}
	return nil
}

// openMongo opens a store on a fresh database, dropped by cleanup.
func openMongo(ctx context.Context, uri string) (*mongostore.Store, func(), error) {
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	db := "runtime_bench_" + hex.EncodeToString(suffix[:])
	st, err := mongostore.Open(ctx, uri, newScheme(), mongostore.Options{Database: db})
	if err != nil {
		return nil, nil, err
	}
	fmt.Printf("mongo: database %s, watch mode %s\n", db, st.WatchMode())
	return st, func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = st.Database().Drop(cctx)
		_ = st.Close(cctx)
	}, nil
}

// mongoE2E measures both loops driven by writes to the Mongo store.
func mongoE2E(ctx context.Context, c config, rep *report, st store.Store, objs []*Item) error {
	const be = "mongo"
	var value int64 = 1_000_000
	// Each round updates the next mongoUpdates objects, so that no object
	// is written twice in a round.
	next := 0
	pick := func(int) []*Item {
		out := make([]*Item, 0, c.mongoUpdates)
		for range min(c.mongoUpdates, len(objs)) {
			out = append(out, objs[next])
			next = (next + 1) % len(objs)
		}
		return out
	}
	perRound := fmt.Sprintf("%d updates per round", min(c.mongoUpdates, len(objs)))

	alone, err := writeRate(ctx, c, st, pick, value)
	if err != nil {
		return err
	}
	value += 1000
	writes := rep.add(be, "store updates, nothing watching", "writes/s", alone.writes, fmt.Sprintf("%d writers, %s", c.writers, perRound))

	fmt.Println("mongo: Capstan controller")
	tr := newTracker()
	capstan := &capstanLoop{st: st, tr: tr, workers: c.workers, objects: len(objs)}
	if err := capstan.start(ctx); err != nil {
		return err
	}
	capR, err := throughput(ctx, c, st, pick, tr, value)
	value += 1000
	if err != nil {
		return err
	}
	capRate := rep.add(be, "Capstan controller, noop reconcile", "reconciles/s", capR.reconciles, fmt.Sprintf("%d workers, %s", c.workers, perRound))
	rep.add(be, "  store updates in the same rounds", "writes/s", capR.writes, "")
	ratios := make([]float64, len(capR.reconciles))
	for i := range ratios {
		ratios[i] = capR.reconciles[i] / capR.writes[i]
	}
	burst := rep.add(be, "  reconciles / writes, same round", "ratio", ratios, "the burst's last event latency included")
	pace := rep.add(be, "  reconcile pace / write pace, same round", "ratio", capR.pace, "first→last reconcile vs first→last write")
	lat, err := latency(ctx, st, objs, tr, c.mongoLatency, value, c.roundTimeout)
	value += int64(c.mongoLatency)
	if err != nil {
		return err
	}
	if err := capstan.stop(); err != nil {
		return err
	}
	p50, p99 := latencyRows(rep, be, "Capstan controller", lat, c.rounds)

	fmt.Println("mongo: bare watch → work queue loop")
	tr = newTracker()
	bare := &bareLoop{st: st, tr: tr, workers: c.workers}
	if err := bare.start(ctx); err != nil {
		return err
	}
	bareR, err := throughput(ctx, c, st, pick, tr, value)
	value += 1000
	if err != nil {
		return err
	}
	bareRate := rep.add(be, "bare watch → client-go queue loop", "reconciles/s", bareR.reconciles, "same workers and writers")
	rep.add(be, "  store updates in the same rounds", "writes/s", bareR.writes, "")
	blat, err := latency(ctx, st, objs, tr, c.mongoLatency, value, c.roundTimeout)
	if err != nil {
		return err
	}
	if err := bare.stop(); err != nil {
		return err
	}
	latencyRows(rep, be, "bare loop", blat, c.rounds)

	// The headline compares the pace of reconciles with the pace of the
	// writes they followed in the same round: whether the framework keeps
	// up with the store, with the watch's latency (the store's) taken
	// out. The burst ratio keeps it in; against the rate with nothing
	// watching, the cost of the store's own watch shows too.
	rep.set("mongo_reconcile_vs_write_ratio", "%.2f", pace)
	rep.set("mongo_reconcile_vs_write_ratio_burst", "%.2f", burst)
	rep.set("mongo_reconcile_vs_unwatched_write_ratio", "%.2f", capRate/writes)
	rep.set("mongo_reconciles_per_sec", "%.0f", capRate)
	rep.set("mongo_throughput_vs_bare", "%.2f", capRate/bareRate)
	rep.set("mongo_latency_p50_ms", "%.1f", float64(p50)/float64(time.Millisecond))
	rep.set("mongo_latency_p99_ms", "%.1f", float64(p99)/float64(time.Millisecond))
	return nil
}

// mongoSync measures an informer's initial sync of the n objects in st
// against the driver's cursor over the same documents.
func mongoSync(ctx context.Context, c config, rep *report, st *mongostore.Store, n int) error {
	const be = "mongo"
	fmt.Println("mongo: cache sync")
	kind, err := st.Scheme().Kind(ItemKind)
	if err != nil {
		return err
	}
	coll := st.Database().Collection(kind.Collection)
	var raw, synced, ratio, perObj []float64
	for range c.mongoSyncRounds {
		r, err := cursorRead(ctx, coll.Find, n)
		if err != nil {
			return err
		}
		s, b, err := informerSync(ctx, st, n)
		if err != nil {
			return err
		}
		raw, synced, perObj = append(raw, seconds(r)), append(synced, seconds(s)), append(perObj, b)
		ratio = append(ratio, s.Seconds()/r.Seconds())
	}
	note := fmt.Sprintf("%d objects", n)
	rep.add(be, "raw read: driver cursor over the collection", "s", raw, note+", documents not decoded")
	rep.add(be, "informer initial sync", "s", synced, fmt.Sprintf("%s, List pages of %d", note, informerPageSize))
	r := rep.add(be, "  sync / driver cursor", "ratio", ratio, "")
	b := rep.add(be, "  heap per cached object", "bytes", perObj, "")
	rep.set("sync_vs_raw_ratio", "%.2f", r)
	rep.set("bytes_per_cached_object_mongo", "%.0f", b)
	return nil
}
