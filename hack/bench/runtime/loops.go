package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/client-go/util/workqueue"

	"github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/controller/builder"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// ItemKind is the benchmark's kind.
const ItemKind = "Item"

// namespace holds every benchmark object.
const namespace = "bench"

// Item is the benchmark's resource: small, like most operators' objects.
type Item struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec is what the writers change.
	Spec ItemSpec `json:"spec"`
	// Status is never written.
	Status ItemStatus `json:"status"`
}

// ItemSpec is an Item's desired state.
type ItemSpec struct {
	// Value changes on every update.
	Value int64 `json:"value"`
	// Note pads the object to a realistic size.
	Note string `json:"note,omitempty"`
}

// ItemStatus is an Item's observed state.
type ItemStatus struct {
	// Seen is unused; it makes the object look like a resource.
	Seen int64 `json:"seen,omitempty"`
}

func newScheme() *store.Scheme {
	s := store.NewScheme()
	store.MustRegister[Item](s, ItemKind)
	return s
}

func itemName(i int) string { return fmt.Sprintf("item-%06d", i) }

// populate creates n Items with conc concurrent writers and returns them
// as stored (with their resourceVersions).
func populate(ctx context.Context, st store.Store, n, conc int) ([]*Item, error) {
	objs := make([]*Item, n)
	for i := range objs {
		objs[i] = &Item{
			ObjectMeta: meta.ObjectMeta{Namespace: namespace, Name: itemName(i), Labels: map[string]string{"app": "bench"}},
			Spec:       ItemSpec{Note: "a note that makes the object about as big as a small real resource"},
		}
	}
	err := parallel(conc, n, func(i int) error { return st.Create(ctx, objs[i]) })
	return objs, err
}

// parallel runs fn(i) for i in [0, n) on conc goroutines and returns the
// first error.
func parallel(conc, n int, fn func(i int) error) error {
	var (
		wg    sync.WaitGroup
		first atomic.Pointer[error]
	)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += conc {
				if err := fn(i); err != nil {
					first.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if p := first.Load(); p != nil {
		return *p
	}
	return nil
}

// updateAll writes a new spec to every object with writers concurrent
// writers and returns when the first and the last write were
// acknowledged.
func updateAll(ctx context.Context, st store.Store, objs []*Item, writers int, value int64) (first, last time.Time, err error) {
	var firstAck span
	firstAck.reset()
	err = parallel(writers, len(objs), func(i int) error {
		objs[i].Spec.Value = value
		if err := st.Update(ctx, objs[i]); err != nil {
			return err
		}
		firstAck.note(time.Now())
		return nil
	})
	return firstAck.first(), time.Now(), err
}

// span keeps the earliest and the latest of times noted concurrently.
type span struct{ lo, hi atomic.Int64 } // monotonic, relative to epoch

func (s *span) reset() {
	s.lo.Store(math.MaxInt64)
	s.hi.Store(math.MinInt64)
}

func (s *span) note(t time.Time) {
	at := int64(t.Sub(epoch))
	for {
		old := s.lo.Load()
		if at >= old || s.lo.CompareAndSwap(old, at) {
			break
		}
	}
	for {
		old := s.hi.Load()
		if at <= old || s.hi.CompareAndSwap(old, at) {
			break
		}
	}
}

func (s *span) first() time.Time { return epoch.Add(time.Duration(s.lo.Load())) }
func (s *span) last() time.Time  { return epoch.Add(time.Duration(s.hi.Load())) }

// tracker counts reconcile starts. Reconcilers of every loop call hit.
type tracker struct {
	count  atomic.Int64
	target atomic.Int64
	hits   span // the first and the latest hit since arm
	probe  atomic.Pointer[probe]

	mu   sync.Mutex
	done chan struct{}
}

// probe asks for the start time of the next reconcile of key.
type probe struct {
	key meta.Key
	at  chan time.Time
}

func newTracker() *tracker { return &tracker{done: make(chan struct{})} }

// arm resets the count and returns a channel closed at the target-th hit.
func (t *tracker) arm(target int64) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.target.Store(-1)
	t.count.Store(0)
	t.hits.reset()
	t.done = make(chan struct{})
	t.target.Store(target)
	return t.done
}

// epoch is the reference of the tracker's monotonic times.
var epoch = time.Now()

// lastHit returns when the latest hit since arm happened.
func (t *tracker) lastHit() time.Time { return t.hits.last() }

// hit records a reconcile start.
func (t *tracker) hit(key meta.Key) {
	now := time.Now()
	if p := t.probe.Load(); p != nil && p.key == key {
		select {
		case p.at <- now:
		default:
		}
	}
	// Noted before counting, so that whoever sees the target reached
	// also sees every hit's time; span keeps the extremes even when a
	// worker is descheduled between reading the clock and noting it.
	t.hits.note(now)
	if t.count.Add(1) == t.target.Load() {
		t.mu.Lock()
		close(t.done)
		t.mu.Unlock()
	}
}

// loop is something that reconciles Items: the Capstan controller or a
// bare queue loop.
type loop interface {
	// start runs the loop; it returns once the loop reconciles.
	start(ctx context.Context) error
	// stop stops it.
	stop() error
}

// capstanLoop is a manager running one controller with a noop reconciler,
// as an operator author writes it.
type capstanLoop struct {
	st      store.Store
	tr      *tracker
	workers int
	objects int // objects in the store, reconciled once at start

	cancel context.CancelFunc
	done   chan error
}

func (l *capstanLoop) start(ctx context.Context) error {
	mgr, err := manager.New(manager.Options{Store: l.st})
	if err != nil {
		return err
	}
	err = builder.ControllerManagedBy(mgr).
		For(&Item{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: l.workers}).
		Complete(controller.Func(func(_ context.Context, req controller.Request) (controller.Result, error) {
			l.tr.hit(req)
			return controller.Result{}, nil
		}))
	if err != nil {
		return err
	}
	initial := l.tr.arm(int64(l.objects))
	ctx, l.cancel = context.WithCancel(ctx)
	l.done = make(chan error, 1)
	go func() { l.done <- mgr.Start(ctx) }()
	select {
	case <-initial:
		return nil
	case err := <-l.done:
		return fmt.Errorf("manager stopped: %v", err)
	case <-time.After(5 * time.Minute):
		return fmt.Errorf("initial reconciles: %d of %d after 5m", l.tr.count.Load(), l.objects)
	}
}

func (l *capstanLoop) stop() error {
	l.cancel()
	return <-l.done
}

// bareLoop is the same work without the framework: the store's raw watch
// feeds a client-go rate-limiting work queue (the controller's default
// rate limiter, no metrics) drained by the same number of workers.
type bareLoop struct {
	st      store.Store
	tr      *tracker
	workers int

	cancel context.CancelFunc
	wg     sync.WaitGroup
	err    atomic.Pointer[error]
}

func (l *bareLoop) start(ctx context.Context) error {
	ctx, l.cancel = context.WithCancel(ctx)
	ch, err := l.st.Watch(ctx, ItemKind, store.WatchOptions{})
	if err != nil {
		return err
	}
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[meta.Key]())
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer q.ShutDown()
		for {
			var ev store.Event
			select {
			case <-ctx.Done():
				return
			case e, ok := <-ch:
				if !ok {
					return
				}
				ev = e
			}
			switch ev.Type {
			case store.Added, store.Modified, store.Deleted:
				q.Add(meta.KeyOf(ev.Object))
			case store.Expired, store.Error:
				err := fmt.Errorf("raw watch ended: %s %v", ev.Type, ev.Err)
				l.err.CompareAndSwap(nil, &err)
				return
			}
		}
	}()
	for range l.workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				k, shutdown := q.Get()
				if shutdown {
					return
				}
				l.tr.hit(k)
				q.Forget(k)
				q.Done(k)
			}
		}()
	}
	return nil
}

func (l *bareLoop) stop() error {
	l.cancel()
	l.wg.Wait()
	if p := l.err.Load(); p != nil {
		return *p
	}
	return nil
}

// rounds holds per-round figures of a throughput run.
type rounds struct {
	// reconciles is objects over the time from the first write to the
	// last reconcile start, per second.
	reconciles []float64
	// writes is objects over the time from the first write to the last
	// acknowledgement, per second.
	writes []float64
	// cpu is the process's CPU time per object (write and reconcile and
	// everything in between), in microseconds.
	cpu []float64
	// pace is the time between the first and the last acknowledged
	// write over the time between the first and the last reconcile
	// start: the reconcile rate over the write rate once both run, with
	// the pipeline's latency taken out.
	pace []float64
}

// all picks every object in every round.
func all(objs []*Item) func(int) []*Item { return func(int) []*Item { return objs } }

// throughput runs rounds of "update each picked object once" through a
// running loop.
func throughput(ctx context.Context, c config, st store.Store, pick func(round int) []*Item, tr *tracker, base int64) (rounds, error) {
	var out rounds
	for r := range c.rounds {
		objs := pick(r)
		n := float64(len(objs))
		done := tr.arm(int64(len(objs)))
		cpu0 := cpuTime()
		t0 := time.Now()
		firstAck, wrote, err := updateAll(ctx, st, objs, c.writers, base+int64(r))
		if err != nil {
			return out, err
		}
		select {
		case <-done:
		case <-time.After(c.roundTimeout):
			return out, fmt.Errorf("round %d: %d of %d reconciles after %v", r, tr.count.Load(), len(objs), c.roundTimeout)
		}
		cpu := cpuTime() - cpu0
		last := tr.lastHit()
		out.reconciles = append(out.reconciles, n/last.Sub(t0).Seconds())
		out.writes = append(out.writes, n/wrote.Sub(t0).Seconds())
		out.cpu = append(out.cpu, micros(cpu)/n)
		if hitSpan := last.Sub(tr.hits.first()); hitSpan > 0 {
			out.pace = append(out.pace, wrote.Sub(firstAck).Seconds()/hitSpan.Seconds())
		}
	}
	return out, nil
}

// writeRate runs rounds of "update each picked object once" with nothing
// watching; reconciles stays empty.
func writeRate(ctx context.Context, c config, st store.Store, pick func(round int) []*Item, base int64) (rounds, error) {
	var out rounds
	for r := range c.rounds {
		objs := pick(r)
		n := float64(len(objs))
		cpu0 := cpuTime()
		t0 := time.Now()
		_, wrote, err := updateAll(ctx, st, objs, c.writers, base+int64(r))
		if err != nil {
			return out, err
		}
		out.writes = append(out.writes, n/wrote.Sub(t0).Seconds())
		out.cpu = append(out.cpu, micros(cpuTime()-cpu0)/n)
	}
	return out, nil
}

// cpuTime is the CPU time the process has used so far (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// queueOnly pushes the objects' keys straight into a client-go queue
// drained by the workers: the floor under any loop.
func queueOnly(c config, objs []*Item) []float64 {
	keys := make([]meta.Key, len(objs))
	for i, o := range objs {
		keys[i] = meta.KeyOf(o)
	}
	var out []float64
	for range c.rounds {
		tr := newTracker()
		done := tr.arm(int64(len(keys)))
		q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[meta.Key]())
		var wg sync.WaitGroup
		for range c.workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					k, shutdown := q.Get()
					if shutdown {
						return
					}
					tr.hit(k)
					q.Forget(k)
					q.Done(k)
				}
			}()
		}
		t0 := time.Now()
		for _, k := range keys {
			q.Add(k)
		}
		<-done
		out = append(out, float64(len(keys))/tr.lastHit().Sub(t0).Seconds())
		q.ShutDown()
		wg.Wait()
	}
	return out
}

// latency writes one object at a time and returns, per write, the time
// from the store acknowledging it to the start of its reconcile, with a
// random pause between writes so that they fall anywhere in a poll cycle.
func latency(ctx context.Context, st store.Store, objs []*Item, tr *tracker, samples int, base int64, timeout time.Duration) ([]time.Duration, error) {
	defer tr.probe.Store(nil)
	out := make([]time.Duration, 0, samples)
	for i := range samples {
		obj := objs[i%len(objs)]
		p := &probe{key: meta.KeyOf(obj), at: make(chan time.Time, 1)}
		tr.probe.Store(p)
		obj.Spec.Value = base + int64(i)
		if err := st.Update(ctx, obj); err != nil {
			return nil, err
		}
		acked := time.Now()
		select {
		case at := <-p.at:
			out = append(out, max(at.Sub(acked), 0))
		case <-time.After(timeout):
			return nil, fmt.Errorf("sample %d: no reconcile of %s within %v", i, p.key, timeout)
		}
		time.Sleep(time.Duration(rand.Int64N(int64(2 * time.Millisecond))))
	}
	return out, nil
}

// percentile returns the p-th percentile (0..100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p / 100 * float64(len(s)-1))
	return s[i]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
