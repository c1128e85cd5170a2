// Command coordination measures the coordination primitives on the
// embedded server, next to the raw cost of one findOneAndUpdate round trip
// measured in the same run:
//
//   - Lock acquire+release uncontended (latency and throughput) and with 8
//     contenders (each its own Membership and Locks): acquisitions per
//     second and the wait p50/p99;
//   - hand-over: once the Acquire in another Locks instance is blocked,
//     the holder reads its work item (its critical section) and releases
//     at t0; the waiting Acquire returns at t1. Its unit is a raw round
//     trip before each hand-over; next to it the watch latency (start of a
//     write → the informer's event), so that the target "2 round trips +
//     watch latency" can be judged;
//   - failover of the Elector: the leader's Run context is cancelled
//     without releasing the lease (like kill -9), timed until the
//     follower's OnStartedLeading, with the e2e's short durations (lease
//     3s, renew deadline 2s, retry 0.5s; several rounds) and with the
//     defaults (one round, about 17 s, run alongside the short rounds);
//   - sharded throughput on the memory store (a measure of the framework):
//     N items reconciled once by a reconciler that sleeps a few
//     milliseconds, with 1, 2 and 3 replicas, each a Membership, Sharder,
//     cache and controller of one worker.
//
// It prints the medians in a table and ends with one line:
//
//	RESULT lock_roundtrips=… handover_roundtrips=… failover_s=… sharded_speedup_3=…
//
// Round trips are measured time / one findOneAndUpdate round trip
// measured beside it (per round; the medians of the rounds' ratios);
// failover_s is with the short durations; sharded_speedup_3 is the time
// with 1 replica over the time with 3. Never build it with -race.
//
//	go run ./hack/bench/coordination [-rounds 3] [-quick]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/controller/handler"
	"github.com/capstanhq/capstan/pkg/coordination"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/embedded"
	"github.com/capstanhq/capstan/pkg/store/memory"
	mongostore "github.com/capstanhq/capstan/pkg/store/mongo"
)

// Item is the resource the sharded controllers reconcile.
type Item struct {
	meta.ObjectMeta `json:"metadata"`
	Spec            struct {
		N int `json:"n"`
	} `json:"spec"`
}

const (
	itemKind = "Item"
	ns       = "bench"
	group    = "bench"

	// The e2e's short durations.
	shortLease = 3 * time.Second
	shortRenew = 2 * time.Second
	shortRetry = 500 * time.Millisecond
	// Member lease of every Membership (the e2e's).
	memberLease = 8 * time.Second
)

type config struct {
	rounds     int
	rawN       int
	pairs      int
	contenders int
	contendFor time.Duration
	handovers  int
	watchN     int
	failovers  int
	defaults   bool
	items      int
	work       time.Duration
	shards     int
	oplogMax   int64
}

func main() {
	c := config{}
	quick := flag.Bool("quick", false, "fewer and shorter rounds, no failover with the default durations")
	flag.IntVar(&c.rounds, "rounds", 3, "rounds of the lock, hand-over and sharding measurements")
	flag.IntVar(&c.items, "items", 300, "items of the sharded controller")
	flag.DurationVar(&c.work, "work", 2*time.Millisecond, "simulated work of one reconcile")
	flag.IntVar(&c.shards, "shards", 12, "shards of the sharded controller")
	flag.Int64Var(&c.oplogMax, "oplog-max-entries", 0, "entry cap of the embedded server's oplog; 0 is the server's default")
	flag.Parse()
	c.rawN, c.pairs, c.contenders, c.contendFor, c.handovers, c.watchN, c.failovers, c.defaults = 100, 100, 8, 2*time.Second, 15, 30, 3, true
	if *quick {
		c.rounds, c.rawN, c.pairs, c.contendFor, c.handovers, c.watchN, c.failovers, c.defaults = 1, 50, 50, time.Second, 5, 10, 1, false
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "coordination:", err)
		os.Exit(1)
	}
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "n/a"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "n/a"
	}
	return strings.Join(f[:3], " ")
}

func newScheme() *store.Scheme {
	s := store.NewScheme()
	if err := coordination.AddToScheme(s); err != nil {
		panic(err)
	}
	store.MustRegister[Item](s, itemKind)
	return s
}

// row is one line of the table.
type row struct{ what, value, note string }

func run(c config) error {
	loadStart := loadavg()
	began := time.Now()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "capstan-bench-coordination-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := embedded.New(embedded.Options{DataDir: dir, Addr: "127.0.0.1:0", OplogMaxEntries: c.oplogMax})
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	defer srv.Stop(context.Background())
	st, err := mongostore.Open(ctx, srv.URI(), newScheme(), mongostore.Options{Database: "bench"})
	if err != nil {
		return err
	}
	defer st.Close(context.Background())

	var rows []row
	add := func(what, value, note string) { rows = append(rows, row{what, value, note}) }

	// Locks: raw round trip, uncontended pairs, hand-over and watch
	// latency, per round; contention per round.
	var rawMs, writeMs, rawBusyMs, writeBusyMs, unitMs, acqMs, relMs, pairMs, pairOps, handMs, handUnitMs, watchMs, contOps, contP50, contP99 []float64
	for r := range c.rounds {
		lr, err := lockRound(ctx, st, c, r)
		if err != nil {
			return fmt.Errorf("lock round %d: %w", r, err)
		}
		rawMs = append(rawMs, lr.raw)
		writeMs = append(writeMs, lr.write)
		rawBusyMs = append(rawBusyMs, lr.rawBusy)
		writeBusyMs = append(writeBusyMs, lr.writeBusy)
		unitMs = append(unitMs, lr.unit)
		acqMs = append(acqMs, lr.acq)
		relMs = append(relMs, lr.rel)
		pairMs = append(pairMs, lr.pair)
		pairOps = append(pairOps, lr.pairOps)
		handMs = append(handMs, lr.hand)
		handUnitMs = append(handUnitMs, lr.handUnit)
		watchMs = append(watchMs, lr.watch)
		contOps = append(contOps, lr.contOps)
		contP50 = append(contP50, lr.contP50)
		contP99 = append(contP99, lr.contP99)
		fmt.Fprintf(os.Stderr, "round %d: raw %.3f ms (idle) %.3f / %.3f ms (beside pairs / hand-overs), pair %.3f ms, hand-over %.3f ms, watch %.3f ms, %d contenders %.0f/s\n",
			r+1, lr.raw, lr.unit, lr.handUnit, lr.pair, lr.hand, lr.watch, c.contenders, lr.contOps)
	}
	raw, unit, handUnit := median(rawMs), median(unitMs), median(handUnitMs)
	// Ratios per round (each against its own round's unit), then medians.
	// The unit is the raw round trip measured side by side with the lock
	// pairs, or with the hand-overs, under the same server load (the lock
	// processes' watches).
	var lockRTs, lockIdleRTs, handRTs, handTargets []float64
	for i := range unitMs {
		lockRTs = append(lockRTs, pairMs[i]/unitMs[i])
		lockIdleRTs = append(lockIdleRTs, pairMs[i]/rawMs[i])
		handRTs = append(handRTs, handMs[i]/handUnitMs[i])
		handTargets = append(handTargets, 2+watchMs[i]/handUnitMs[i])
	}
	lockRT := median(lockRTs)
	handRT := median(handRTs)
	watch := median(watchMs)
	add("raw findOneAndUpdate round trip, idle server", ms(raw), fmt.Sprintf("median of %d", c.rawN))
	add("store Update of a Lock (compare-and-swap), idle server", ms(median(writeMs)), fmt.Sprintf("%.2f × the idle round trip; median of %d", median(writeMs)/raw, c.rawN))
	add("raw findOneAndUpdate, 2 lock processes running", ms(median(rawBusyMs)), fmt.Sprintf("%.2f × idle; every write wakes their watches, whose oplog reads load the server", median(rawBusyMs)/raw))
	add("store Update of a Lock, 2 lock processes running", ms(median(writeBusyMs)), fmt.Sprintf("%.2f × the raw round trip beside it", median(writeBusyMs)/median(rawBusyMs)))
	add("raw findOneAndUpdate between the lock pairs", ms(unit), "the unit (RT): one before each pair, same load")
	add("lock acquire+release, uncontended", ms(median(pairMs)), fmt.Sprintf("%.2f RT (target ≤ 3; median of the rounds' ratios); %d pairs; %.2f × the idle-server round trip",
		lockRT, c.pairs, median(lockIdleRTs)))
	add("  of which Acquire / Release", ms(median(acqMs))+" / "+ms(median(relMs)), fmt.Sprintf("%.2f RT / %.2f RT", median(acqMs)/unit, median(relMs)/unit))
	add("lock pairs/s, uncontended", fmt.Sprintf("%.0f", median(pairOps)), "one process, one lock")
	add(fmt.Sprintf("lock acquisitions/s, %d contenders", c.contenders), fmt.Sprintf("%.0f", median(contOps)),
		fmt.Sprintf("each its own Membership+Locks, one lock, %v", c.contendFor))
	add(fmt.Sprintf("lock wait p50 / p99, %d contenders", c.contenders), ms(median(contP50))+" / "+ms(median(contP99)), "Acquire call → return")
	add("watch latency (write start → informer event)", ms(watch), fmt.Sprintf("median of %d; includes the write (≈1 RT)", c.watchN))
	add("raw findOneAndUpdate between the hand-overs", ms(handUnit), "the hand-overs' unit (RT): one before each, same load")
	lag := watch - handUnit
	add("hand-over (release start → waiter's Acquire returns)", ms(median(handMs)),
		fmt.Sprintf("%.2f RT (median of the rounds' ratios); target 2 RT + watch latency = %.2f RT (median of the rounds') = %s; stricter, with the watch's own write taken out: %.2f RT = %s",
			handRT, median(handTargets), ms(2*handUnit+watch), 2+lag/handUnit, ms(2*handUnit+lag)))

	// Failover.
	fo, foDefault, err := failover(ctx, st, c)
	if err != nil {
		return fmt.Errorf("failover: %w", err)
	}
	failS := median(fo)
	add("failover, short durations (3s/2s/0.5s)", fmt.Sprintf("%.2f s", failS), fmt.Sprintf("median of %d; min %.2f max %.2f", len(fo), slices.Min(fo), slices.Max(fo)))
	if c.defaults {
		add("failover, default durations (15s/10s/2s)", fmt.Sprintf("%.2f s", foDefault), "1 round")
	}

	// Sharding on the memory store.
	times := map[int][]float64{}
	for r := range c.rounds {
		for _, n := range []int{1, 2, 3} {
			d, err := sharded(ctx, c, n)
			if err != nil {
				return fmt.Errorf("sharded, %d replicas: %w", n, err)
			}
			times[n] = append(times[n], d)
			fmt.Fprintf(os.Stderr, "round %d: sharded %d replicas %.3f s\n", r+1, n, d)
		}
	}
	for _, n := range []int{1, 2, 3} {
		t := median(times[n])
		add(fmt.Sprintf("sharded, %d replica(s): reconcile %d items", n, c.items), fmt.Sprintf("%.3f s", t),
			fmt.Sprintf("%.0f items/s; speedup %.2f×", float64(c.items)/t, median(times[1])/t))
	}
	speedup := median(times[1]) / median(times[3])

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tmedian\tnote")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.what, r.value, r.note)
	}
	tw.Flush()
	fmt.Printf("embedded server on 127.0.0.1; sharding on the memory store, %d shards, %v work per reconcile, 1 worker per replica; %d round(s)\n",
		c.shards, c.work, c.rounds)
	fmt.Printf("load average at start: %s; at end: %s; wall time %.0f s\n", loadStart, loadavg(), time.Since(began).Seconds())
	fmt.Printf("handover target (2 RT + watch latency, in RT): %.2f\n", median(handTargets))
	fmt.Printf("RESULT lock_roundtrips=%.2f handover_roundtrips=%.2f failover_s=%.2f sharded_speedup_3=%.2f\n", lockRT, handRT, failS, speedup)
	return nil
}

func ms(v float64) string { return fmt.Sprintf("%.3f ms", v) }

func median(xs []float64) float64 { return percentile(xs, 50) }

func percentile(xs []float64, p float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[int(float64(len(s)-1)*p/100+0.5)]
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

// proc is one simulated process: a Membership and its Locks.
type proc struct {
	m      *coordination.Membership
	l      *coordination.Locks
	reg    *prometheus.Registry // of its lock metrics
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// waiters returns the Acquire calls of p blocked on lock name.
func (p *proc) waiters(name string) (float64, error) {
	mfs, err := p.reg.Gather()
	if err != nil {
		return 0, err
	}
	key := meta.Key{Namespace: ns, Name: name}.String()
	for _, mf := range mfs {
		if mf.GetName() != "capstan_lock_waiters" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "lock" && l.GetValue() == key {
					return m.GetGauge().GetValue(), nil
				}
			}
		}
	}
	return 0, nil
}

func startProc(ctx context.Context, st store.Store) (*proc, error) {
	m, err := coordination.NewMembership(coordination.MembershipConfig{Store: st, Namespace: ns, Group: group, LeaseDuration: memberLease})
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	l, err := coordination.NewLocks(coordination.LocksConfig{Store: st, Membership: m, Metrics: coordination.NewMetrics(reg)})
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithCancel(ctx)
	p := &proc{m: m, l: l, reg: reg, cancel: cancel}
	for _, s := range []interface{ Start(context.Context) error }{m, l} {
		p.wg.Add(1)
		go func() { defer p.wg.Done(); _ = s.Start(cctx) }()
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if _, err := m.WaitSession(wctx); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

func (p *proc) stop() { p.cancel(); p.wg.Wait() }

type lockResult struct {
	raw, write, rawBusy, writeBusy, unit, acq, rel, pair, pairOps, hand, handUnit, watch, contOps, contP50, contP99 float64
}

func lockRound(ctx context.Context, st *mongostore.Store, c config, round int) (lockResult, error) {
	var res lockResult
	// The unit: one findOneAndUpdate round trip through the raw client,
	// then one compare-and-swap Update of a Lock through the store.
	var err error
	if res.raw, res.write, err = roundTrips(ctx, st, c.rawN, fmt.Sprintf("r%d", round)); err != nil {
		return res, err
	}

	a, err := startProc(ctx, st)
	if err != nil {
		return res, err
	}
	defer a.stop()
	b, err := startProc(ctx, st)
	if err != nil {
		return res, err
	}
	defer b.stop()
	// The same with the two processes' informers watching.
	if res.rawBusy, res.writeBusy, err = roundTrips(ctx, st, c.rawN, fmt.Sprintf("r%d-busy", round)); err != nil {
		return res, err
	}

	// Uncontended pairs on one lock (a few warm-up pairs first), each
	// after one raw findOneAndUpdate, so that the unit and the pairs are
	// measured side by side under the same server load.
	name := fmt.Sprintf("solo-%d", round)
	rawID := fmt.Sprintf("r%d-pairs", round)
	if _, err := rawColl(st).InsertOne(ctx, bson.D{{Key: "_id", Value: rawID}, {Key: "n", Value: 0}}); err != nil {
		return res, err
	}
	var pairs, acqs, rels, units []float64
	var total time.Duration
	for i := range c.pairs + 5 {
		unit, err := rawRoundTrip(ctx, st, rawID)
		if err != nil {
			return res, err
		}
		t := time.Now()
		h, err := a.l.Acquire(ctx, name)
		if err != nil {
			return res, err
		}
		tr := time.Now()
		if err := h.Release(ctx); err != nil {
			return res, err
		}
		if i >= 5 {
			units = append(units, unit)
			pairs = append(pairs, msSince(t))
			acqs = append(acqs, float64(tr.Sub(t).Microseconds())/1000)
			rels = append(rels, msSince(tr))
			total += time.Since(t)
		}
	}
	res.pair, res.acq, res.rel, res.unit = median(pairs), median(acqs), median(rels), median(units)
	res.pairOps = float64(c.pairs) / total.Seconds()

	// Hand-over: the holder alternates between a and b. The holder
	// releases as soon as the waiter's Acquire is blocked (its
	// capstan_lock_waiters gauge shows it), right after reading its work
	// item (its critical section). Both processes are thus as busy as
	// when the unit is measured, back to back: on this VM a process idle
	// for 100 ms pays up to a millisecond more for its next request (the
	// vCPUs sleep), and so would a hand-over after a pause. A read leaves
	// no oplog entry, so no watch work runs beside the release either.
	name = fmt.Sprintf("handover-%d", round)
	holder, waiter := a, b
	h, err := holder.l.Acquire(ctx, name)
	if err != nil {
		return res, err
	}
	work := &Item{ObjectMeta: meta.ObjectMeta{Namespace: ns, Name: name}}
	if err := st.Create(ctx, work); err != nil {
		return res, err
	}
	var hand, handUnits []float64
	for i := range c.handovers + 2 {
		// The unit of the hand-overs, measured before each, like the
		// pairs'.
		unit, err := rawRoundTrip(ctx, st, rawID)
		if err != nil {
			return res, err
		}
		got := make(chan *coordination.Held, 1)
		errc := make(chan error, 1)
		var t1 time.Time
		go func() {
			nh, err := waiter.l.Acquire(ctx, name)
			t1 = time.Now()
			if err != nil {
				errc <- err
				return
			}
			got <- nh
		}()
		for deadline := time.Now().Add(30 * time.Second); ; {
			n, err := waiter.waiters(name)
			if err != nil {
				return res, err
			}
			if n == 1 {
				break
			}
			if time.Now().After(deadline) {
				return res, errors.New("the waiter did not block within 30s")
			}
			time.Sleep(100 * time.Microsecond)
		}
		if err := st.Get(ctx, work.Key(), work); err != nil {
			return res, err
		}
		t0 := time.Now()
		if err := h.Release(ctx); err != nil {
			return res, err
		}
		select {
		case h = <-got:
		case err := <-errc:
			return res, err
		case <-time.After(30 * time.Second):
			return res, errors.New("no hand-over within 30s")
		}
		if i >= 2 {
			hand = append(hand, float64(t1.Sub(t0).Microseconds())/1000)
			handUnits = append(handUnits, unit)
		}
		holder, waiter = waiter, holder
	}
	if err := h.Release(ctx); err != nil {
		return res, err
	}
	res.hand, res.handUnit = median(hand), median(handUnits)

	// Watch latency: a write's start → the informer's event of it.
	w, err := watchLatency(ctx, st, c.watchN, round)
	if err != nil {
		return res, err
	}
	res.watch = median(w)

	// Contention: each contender its own process.
	var ps []*proc
	defer func() {
		for _, p := range ps {
			p.stop()
		}
	}()
	for range c.contenders {
		p, err := startProc(ctx, st)
		if err != nil {
			return res, err
		}
		ps = append(ps, p)
	}
	name = fmt.Sprintf("contended-%d", round)
	var mu sync.Mutex
	var waits []float64
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(c.contendFor)
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				t := time.Now()
				actx, cancel := context.WithDeadline(ctx, deadline)
				h, err := p.l.Acquire(actx, name)
				cancel()
				if err != nil {
					// Near the deadline the driver refuses a write it
					// cannot finish in time: the end, not a failure.
					if time.Until(deadline) > time.Second {
						mu.Lock()
						firstErr = cmpErr(firstErr, err)
						mu.Unlock()
					}
					return
				}
				wt := msSince(t)
				err = h.Release(ctx)
				mu.Lock()
				waits = append(waits, wt)
				firstErr = cmpErr(firstErr, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return res, firstErr
	}
	res.contOps = float64(len(waits)) / time.Since(start).Seconds()
	res.contP50 = percentile(waits, 50)
	res.contP99 = percentile(waits, 99)
	return res, nil
}

// roundTrips returns the median ms of one findOneAndUpdate through the
// raw client and of one compare-and-swap Update of a Lock through the
// store.
func roundTrips(ctx context.Context, st *mongostore.Store, n int, id string) (float64, float64, error) {
	if _, err := rawColl(st).InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "n", Value: 0}}); err != nil {
		return 0, 0, err
	}
	var raw []float64
	for range n {
		ms, err := rawRoundTrip(ctx, st, id)
		if err != nil {
			return 0, 0, err
		}
		raw = append(raw, ms)
	}
	lk := &coordination.Lock{ObjectMeta: meta.ObjectMeta{Namespace: "bench-rt", Name: id}}
	if err := st.Create(ctx, lk); err != nil {
		return 0, 0, err
	}
	var writes []float64
	for range n {
		lk.Spec.Token++
		t := time.Now()
		if err := st.Update(ctx, lk); err != nil {
			return 0, 0, err
		}
		writes = append(writes, msSince(t))
	}
	return median(raw), median(writes), nil
}

// rawColl is the collection of the raw round trips.
func rawColl(st *mongostore.Store) *mongo.Collection {
	return st.Client().Database("bench").Collection("raw_roundtrip")
}

// rawRoundTrip returns the ms of one findOneAndUpdate ($inc, returning the
// new document) of the raw document id through the driver.
func rawRoundTrip(ctx context.Context, st *mongostore.Store, id string) (float64, error) {
	t := time.Now()
	var out bson.M
	err := rawColl(st).FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}}},
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&out)
	return msSince(t), err
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// watchLatency updates a Lock in a namespace of its own n times through
// the store, each time waiting for an informer's event of the write, and
// returns the latencies in ms from the start of the write to the event.
func watchLatency(ctx context.Context, st store.Store, n, round int) ([]float64, error) {
	wns := "bench-watch"
	events := make(chan string, 16)
	inf := source.NewInformer(st, coordination.KindLock, source.InformerOptions{Namespace: wns})
	inf.AddEventHandler(source.HandlerFuncs{
		AddFunc:    func(o meta.Object, _ bool) { events <- o.GetObjectMeta().ResourceVersion },
		UpdateFunc: func(_, o meta.Object) { events <- o.GetObjectMeta().ResourceVersion },
	})
	ictx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	go func() { defer close(done); _ = inf.Run(ictx) }()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if !inf.WaitForSync(wctx) {
		return nil, errors.New("informer did not sync")
	}
	lk := &coordination.Lock{ObjectMeta: meta.ObjectMeta{Namespace: wns, Name: fmt.Sprintf("watch-%d", round)}}
	var lat []float64
	for i := range n + 1 {
		t := time.Now()
		var err error
		if i == 0 {
			err = st.Create(ctx, lk)
		} else {
			lk.Spec.Token++
			err = st.Update(ctx, lk)
		}
		if err != nil {
			return nil, err
		}
		want := lk.ResourceVersion
		timeout := time.After(30 * time.Second)
	wait:
		for {
			select {
			case rv := <-events:
				if rv == want {
					break wait
				}
			case <-timeout:
				return nil, fmt.Errorf("no event for write %d within 30s", i)
			}
		}
		if i > 0 {
			lat = append(lat, msSince(t))
		}
	}
	return lat, nil
}

// failover returns the failover times in seconds with the short
// durations, and the one with the default durations (0 if not measured),
// which runs alongside the short rounds.
func failover(ctx context.Context, st store.Store, c config) ([]float64, float64, error) {
	type out struct {
		d   float64
		err error
	}
	def := make(chan out, 1)
	if c.defaults {
		go func() {
			d, err := failoverOnce(ctx, st, "failover-default", coordination.DefaultLeaseDuration, coordination.DefaultRenewDeadline, coordination.DefaultRetryPeriod)
			def <- out{d, err}
		}()
	} else {
		def <- out{}
	}
	var short []float64
	for r := range c.failovers {
		d, err := failoverOnce(ctx, st, fmt.Sprintf("failover-short-%d", r), shortLease, shortRenew, shortRetry)
		if err != nil {
			return nil, 0, err
		}
		fmt.Fprintf(os.Stderr, "failover round %d: %.2f s\n", r+1, d)
		short = append(short, d)
	}
	o := <-def
	if c.defaults && o.err == nil {
		fmt.Fprintf(os.Stderr, "failover with the defaults: %.2f s\n", o.d)
	}
	return short, o.d, o.err
}

// failoverOnce starts a leader and a follower on lease, cancels the
// leader's Run without releasing the lease and returns the seconds until
// the follower starts leading.
func failoverOnce(ctx context.Context, st store.Store, lease string, ld, rd, rp time.Duration) (float64, error) {
	type cand struct {
		e       *coordination.Elector
		leading chan time.Time
		cancel  context.CancelFunc
		done    chan struct{}
	}
	start := func(id string) (*cand, error) {
		c := &cand{leading: make(chan time.Time, 1), done: make(chan struct{})}
		e, err := coordination.NewElector(coordination.ElectorConfig{Store: st, Lease: meta.Key{Namespace: ns, Name: lease}, Identity: id,
			LeaseDuration: ld, RenewDeadline: rd, RetryPeriod: rp, ReleaseOnCancel: false})
		if err != nil {
			return nil, err
		}
		c.e = e
		rctx, cancel := context.WithCancel(ctx)
		c.cancel = cancel
		go func() {
			defer close(c.done)
			_ = e.Run(rctx, func(context.Context) {
				select {
				case c.leading <- time.Now():
				default:
				}
			})
		}()
		return c, nil
	}
	stop := func(c *cand) { c.cancel(); <-c.done }
	a, err := start(lease + "-a")
	if err != nil {
		return 0, err
	}
	defer stop(a)
	select {
	case <-a.leading:
	case <-time.After(ld + 30*time.Second):
		return 0, errors.New("first candidate never led")
	}
	b, err := start(lease + "-b")
	if err != nil {
		return 0, err
	}
	defer stop(b)
	// Let the follower observe a few renewals.
	time.Sleep(2 * rp)
	if b.e.IsLeader() {
		return 0, errors.New("follower leads while the leader runs")
	}
	t0 := time.Now()
	stop(a) // the lease is not released: like kill -9
	select {
	case t1 := <-b.leading:
		return t1.Sub(t0).Seconds(), nil
	case <-time.After(ld + 60*time.Second):
		return 0, errors.New("no new leader within a minute past the lease")
	}
}

// sharded runs n replicas of a sharded controller on a fresh memory store,
// waits until they split the shards, creates the items and returns the
// seconds from the first create until every item was reconciled once.
func sharded(ctx context.Context, c config, n int) (float64, error) {
	st := memory.New(newScheme())
	defer st.Close(context.Background())
	var seen sync.Map
	var count atomic.Int64
	all := make(chan struct{})
	reconcile := func(ctx context.Context, req controller.Request) (controller.Result, error) {
		time.Sleep(c.work)
		if _, dup := seen.LoadOrStore(req, true); !dup && count.Add(1) == int64(c.items) {
			close(all)
		}
		return controller.Result{}, nil
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var sharders []*coordination.Sharder
	for i := range n {
		m, err := coordination.NewMembership(coordination.MembershipConfig{Store: st, Namespace: ns, Group: "shards", LeaseDuration: memberLease})
		if err != nil {
			return 0, err
		}
		s, err := coordination.NewSharder(coordination.ShardingConfig{Store: st, Membership: m, Name: "items", Shards: c.shards, LeaseDuration: 6 * time.Second})
		if err != nil {
			return 0, err
		}
		cache := source.NewCache(st, source.CacheOptions{Namespace: ns})
		no := false
		ctl, err := controller.New(fmt.Sprintf("items-%d", i), s.Wrap(controller.Func(reconcile)), controller.Options{MaxConcurrentReconciles: 1, NeedLeaderElection: &no})
		if err != nil {
			return 0, err
		}
		src, err := source.Kind(cache, itemKind, handler.EnqueueRequestForObject{})
		if err != nil {
			return 0, err
		}
		if err := ctl.Watch(src); err != nil {
			return 0, err
		}
		inf, err := cache.Informer(itemKind)
		if err != nil {
			return 0, err
		}
		s.Bind(ctl, func() []meta.Key {
			var keys []meta.Key
			for _, o := range inf.List(ns, nil) {
				keys = append(keys, meta.KeyOf(o))
			}
			return keys
		})
		for _, r := range []interface{ Start(context.Context) error }{cache, m, s, ctl} {
			wg.Add(1)
			go func() { defer wg.Done(); _ = r.Start(rctx) }()
		}
		sharders = append(sharders, s)
	}
	// Wait for an even split.
	lo := c.shards / n
	deadline := time.Now().Add(60 * time.Second)
	for {
		total, even := 0, true
		for _, s := range sharders {
			h := len(s.Held())
			total += h
			even = even && h >= lo
		}
		if total == c.shards && even {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("shards not split over %d replicas within 60s", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t0 := time.Now()
	for i := range c.items {
		it := &Item{ObjectMeta: meta.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("item-%04d", i)}}
		if err := st.Create(ctx, it); err != nil {
			return 0, err
		}
	}
	select {
	case <-all:
		return time.Since(t0).Seconds(), nil
	case <-time.After(120 * time.Second):
		return 0, fmt.Errorf("%d of %d items reconciled within 120s", count.Load(), c.items)
	}
}
