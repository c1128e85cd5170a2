// Command runtime benchmarks Capstan's runtime (informers, cache, work
// queues, controllers, manager) over the memory store and the Mongo store on
// an embedded server, side by side with what it is built from:
//
//   - noop-reconcile throughput: N objects are updated once each per round
//     by concurrent writers; a controller with a reconciler that does
//     nothing reconciles them. Throughput is N over the time from the first
//     write to the last reconcile; the store's write rate in the same round,
//     and without any watcher, is printed next to it. On Mongo, whose
//     rounds are short bursts (updates there are slow), the headline ratio
//     compares paces instead: first to last acknowledged write over first
//     to last reconcile start, which leaves out the watch's latency.
//   - the same workload through a bare loop: the store's raw Watch feeding a
//     client-go work queue drained by the same number of workers, with no
//     informer, cache, handler, predicate or controller; and the queue alone
//     with keys added directly. Their ratio to the controller is what the
//     framework adds.
//   - event→reconcile-start latency: one write at a time, from the moment
//     the store acknowledged the write until the reconciler starts.
//   - initial cache sync: an informer listing and syncing M objects, next
//     to the raw read of the same objects (the store's paged List for
//     memory, the driver's cursor for Mongo), and the heap each cached
//     object costs.
//
// Every figure is the median of several rounds. The run prints a table and
// ends with one line
//
//	RESULT memory_reconciles_per_sec=… mongo_reconcile_vs_write_ratio=… sync_vs_raw_ratio=… overhead_vs_bare_queue=… …
//
// Never build it with -race. -cpuprofile writes a CPU profile of the whole
// run for go tool pprof.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

type config struct {
	n               int           // objects in the throughput and latency runs
	syncN           int           // objects in the memory cache-sync run
	rounds          int           // rounds per throughput measurement
	syncRounds      int           // rounds per memory sync measurement
	mongoSyncRounds int           // rounds per Mongo sync measurement
	workers         int           // reconcile workers
	writers         int           // concurrent writers
	latency         int           // latency samples (memory)
	mongoLatency    int           // latency samples (Mongo)
	mongoRounds     int           // rounds per Mongo throughput measurement
	mongoN          int           // objects in the Mongo throughput run
	mongoUpdates    int           // updates per Mongo throughput round
	mongoWriters    int           // concurrent writers on Mongo
	mongo           bool          // run the Mongo part
	roundTimeout    time.Duration // give up on a round after this long
	mongoURI        string        // use this server instead of an embedded one
	cpuProfile      string
	memoryHistory   int
	parts           map[string]bool // parts to run
}

// has reports whether part is to run.
func (c config) has(part string) bool { return c.parts[part] }

func main() {
	var c config
	flag.IntVar(&c.n, "n", 10000, "objects updated per throughput round")
	flag.IntVar(&c.syncN, "sync-n", 100000, "objects in the memory cache-sync run")
	flag.IntVar(&c.rounds, "rounds", 5, "rounds per throughput figure (the median is reported)")
	flag.IntVar(&c.syncRounds, "sync-rounds", 3, "rounds per memory cache-sync figure")
	flag.IntVar(&c.mongoSyncRounds, "mongo-sync-rounds", 2, "rounds per Mongo cache-sync figure")
	flag.IntVar(&c.workers, "workers", 2, "reconcile workers (MaxConcurrentReconciles)")
	flag.IntVar(&c.writers, "writers", 2, "concurrent writers driving the updates")
	flag.IntVar(&c.latency, "latency-samples", 2000, "latency samples on the memory store")
	flag.IntVar(&c.mongoLatency, "mongo-latency-samples", 20, "latency samples on the Mongo store")
	flag.IntVar(&c.mongoRounds, "mongo-rounds", 3, "rounds per Mongo throughput figure")
	flag.IntVar(&c.mongoN, "mongo-n", 10000, "objects in the Mongo runs (cache sync and throughput)")
	flag.IntVar(&c.mongoUpdates, "mongo-updates", 8, "updates per Mongo throughput round (distinct objects)")
	flag.IntVar(&c.mongoWriters, "mongo-writers", 4, "concurrent writers on the Mongo store")
	flag.BoolVar(&c.mongo, "mongo", true, "also run the Mongo part on an embedded server")
	flag.StringVar(&c.mongoURI, "mongo-uri", "", "run the Mongo part against this server instead of an embedded one")
	flag.DurationVar(&c.roundTimeout, "round-timeout", 2*time.Minute, "give up on a round after this long")
	flag.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file")
	flag.IntVar(&c.memoryHistory, "memory-history", 0, "memory store change history per kind (0: 4×n)")
	parts := flag.String("parts", "e2e,feed,sync", "parts to run: e2e (store-driven loops and latency), feed (loops over pre-built events), sync (cache sync); -mongo adds the same over Mongo")
	flag.Parse()
	c.parts = map[string]bool{}
	for _, p := range strings.Split(*parts, ",") {
		c.parts[strings.TrimSpace(p)] = true
	}
	if c.memoryHistory <= 0 {
		c.memoryHistory = 4 * max(c.n, 1)
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "runtime bench:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	if c.cpuProfile != "" {
		f, err := os.Create(c.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx := context.Background()
	start := time.Now()
	fmt.Printf("runtime bench: %s, GOMAXPROCS=%d, n=%d, workers=%d, writers=%d, rounds=%d, load average %s\n",
		runtime.Version(), runtime.GOMAXPROCS(0), c.n, c.workers, c.writers, c.rounds, loadAverage())

	var rep report
	if err := memoryPart(ctx, c, &rep); err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	if c.mongo {
		if err := mongoPart(ctx, c, &rep); err != nil {
			return fmt.Errorf("mongo: %w", err)
		}
	}
	rep.print(os.Stdout)
	fmt.Printf("total time %v, load average %s (other processes' load makes every figure slower)\n", time.Since(start).Round(time.Millisecond), loadAverage())
	fmt.Println(rep.line())
	return nil
}

// row is one measured figure: its value in each round.
type row struct {
	backend, name, unit string
	values              []float64
	note                string
}

func (r row) median() float64 { return median(r.values) }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// report collects rows and the headline figures.
type report struct {
	rows   []row
	result map[string]string
	keys   []string
}

func (r *report) add(backend, name, unit string, values []float64, note string) float64 {
	r.rows = append(r.rows, row{backend: backend, name: name, unit: unit, values: values, note: note})
	return median(values)
}

func (r *report) set(key, format string, v float64) {
	if r.result == nil {
		r.result = map[string]string{}
	}
	if _, ok := r.result[key]; !ok {
		r.keys = append(r.keys, key)
	}
	r.result[key] = fmt.Sprintf(format, v)
}

func (r *report) print(w *os.File) {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "backend\tmeasurement\t    median\t       min\t       max\tunit\trounds\tnote")
	for _, rw := range r.rows {
		lo, hi := slices.Min(rw.values), slices.Max(rw.values)
		fmt.Fprintf(tw, "%s\t%s\t%10s\t%10s\t%10s\t%s\t%6d\t%s\n", rw.backend, rw.name, num(rw.median()), num(lo), num(hi), rw.unit, len(rw.values), rw.note)
	}
	tw.Flush()
	fmt.Fprintln(w)
}

func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

func (r *report) line() string {
	order := []string{"memory_reconciles_per_sec", "mongo_reconcile_vs_write_ratio", "sync_vs_raw_ratio", "overhead_vs_bare_queue"}
	var b strings.Builder
	b.WriteString("RESULT")
	done := map[string]bool{}
	for _, k := range append(order, r.keys...) {
		if done[k] {
			continue
		}
		done[k] = true
		v, ok := r.result[k]
		if !ok {
			v = "n/a"
		}
		fmt.Fprintf(&b, " %s=%s", k, v)
	}
	return b.String()
}

// loadAverage returns the 1, 5 and 15 minute load averages, or "?".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
