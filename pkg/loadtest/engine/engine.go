package engine

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/ammo"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
	"github.com/capstanhq/capstan/pkg/loadtest/files"
	"github.com/capstanhq/capstan/pkg/loadtest/gun"
	"github.com/capstanhq/capstan/pkg/loadtest/schedule"
)

// Options configure a run beyond its spec.
type Options struct {
	// Registry resolves gun types; default gun.NewRegistry().
	Registry *gun.Registry
	// Dir is the directory relative paths in the spec resolve against
	// (files.Dir), unless Files is set.
	Dir string
	// Files opens the files the spec names (ammo files, descriptor sets,
	// TLS files), for example a files.Root that confines them to a
	// directory; nil opens them relative to Dir.
	Files files.FS
	// Lines are the lines of the spec's fields in the text it was decoded
	// from (config.DecodeLines); errors of New then name the line of the
	// field at fault, as the decoder's do. Nil names none.
	Lines config.Lines
	// Share is this replica's part of the load; the zero value is all.
	Share schedule.Share
	// StartAt is the wall-clock time to start at, shared by replicas; the
	// zero value starts at once.
	StartAt time.Time
	// Observer is called with progress about once per ProgressInterval and
	// once at the end, from a goroutine of the engine.
	Observer func(Progress)
	// ProgressInterval is how often Observer is called; default 1s.
	ProgressInterval time.Duration
	// Sinks receive every sample (phout writers and the like); the engine
	// closes them at the end of the run. When one wants the phases of
	// shots (aggregate.WantsPhases), guns are asked to measure them
	// (gun.Env.Phases).
	Sinks []aggregate.Sink
	// Buffer is the aggregator's sample queue length; default 65536.
	Buffer int
}

// Progress is a live view of a run.
type Progress struct {
	aggregate.Progress
	// TargetRPS is the schedules' current combined rate for this share.
	TargetRPS float64
	// InFlight is the number of shots being fired now.
	InFlight int64
	// Instances is the number of running instances.
	Instances int64
	// Done is true in the final report.
	Done bool
}

// Stop reasons.
const (
	// StopDone means every pool ran out of schedule or ammo.
	StopDone = "done"
	// StopDuration means the spec's duration passed.
	StopDuration = "duration"
	// StopAutostop means an autostop rule fired.
	StopAutostop = "autostop"
	// StopCanceled means the caller's context ended.
	StopCanceled = "canceled"
)

// Result is the outcome of a run.
type Result struct {
	*aggregate.Result
	// Verdict judges the run against its thresholds.
	Verdict aggregate.Verdict `json:"verdict"`
	// Stop says why the run ended (StopDone, StopDuration, …).
	Stop string `json:"stop"`
	// Interrupted counts shots canceled in flight when the caller's
	// context ended; they are not in the histograms.
	Interrupted int64 `json:"interrupted"`
	// Share is the part of the load this run produced.
	Share schedule.Share `json:"share"`
}

// Engine is a prepared run. Build it with New, run it once with Run.
type Engine struct {
	spec      *config.Spec
	opts      Options
	rules     []aggregate.Rule
	pools     []*pool
	overdue   int64
	phases    bool // a sink wants shot phases
	agg       atomic.Pointer[aggregate.Aggregator]
	start     time.Time
	started   atomic.Bool
	interrupt atomic.Int64
	ran       atomic.Bool
	stopIssue context.CancelCauseFunc
	mono      int64 // CLOCK_MONOTONIC at start, for the waiters' timers
	limit     int64 // the spec's duration in ns, 0 for none
}

type pool struct {
	spec      *config.Pool
	plan      *schedule.Plan
	tokens    *schedule.Iterator
	startup   *schedule.Iterator
	provider  ammo.Provider
	closeAmmo func() error
	factory   gun.Factory
	inflight  atomic.Int64
	instances atomic.Int64
	ended     atomic.Bool
	end       context.CancelFunc
}

// finish marks the pool ended and wakes its waiting instances, whose
// tokens can no longer be served (the ammo is used up).
func (p *pool) finish() {
	p.ended.Store(true)
	p.end()
}

// New validates spec, opens the pools' ammo and builds their guns (which
// may connect, for gRPC reflection). Errors name the spec field at fault
// ("pools[0].gun.descriptorSet") and, with opts.Lines, its line. Close the
// engine if Run is never called.
func New(ctx context.Context, spec *config.Spec, opts Options) (*Engine, error) {
	if err := spec.Validate(); err != nil {
		return nil, opts.Lines.Locate(err)
	}
	if err := opts.Share.Validate(); err != nil {
		return nil, errs.WithField(err, "share")
	}
	if opts.Registry == nil {
		opts.Registry = gun.NewRegistry()
	}
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = time.Second
	}
	if opts.Files == nil {
		opts.Files = files.Dir(opts.Dir)
	}
	rules, _ := spec.Rules()
	e := &Engine{spec: spec, opts: opts, rules: rules, overdue: int64(spec.Overdue()),
		phases: aggregate.WantsPhases(opts.Sinks)}
	for i := range spec.Pools {
		ps := &spec.Pools[i]
		field := "pools[" + strconv.Itoa(i) + "]"
		p := &pool{spec: ps}
		e.pools = append(e.pools, p)
		p.plan, _ = ps.Plan()
		startup, _ := ps.StartupPlan()
		p.tokens = p.plan.Iter(opts.Share)
		p.startup = startup.Iter(opts.Share)
		var err error
		p.provider, p.closeAmmo, err = ammo.Open(&ps.Ammo, opts.Files)
		if err != nil {
			e.Close()
			return nil, opts.Lines.Locate(errs.WithField(err, field+".ammo"))
		}
		p.factory, err = opts.Registry.Build(ctx, &ps.Gun, opts.Files)
		if err != nil {
			e.Close()
			return nil, opts.Lines.Locate(errs.WithField(err, field+".gun"))
		}
	}
	return e, nil
}

// Close releases the pools' ammo and gun factories. Run closes them itself.
func (e *Engine) Close() error {
	var first error
	for _, p := range e.pools {
		if p.factory != nil {
			if err := p.factory.Close(); err != nil && first == nil {
				first = err
			}
			p.factory = nil
		}
		if p.closeAmmo != nil {
			if err := p.closeAmmo(); err != nil && first == nil {
				first = err
			}
			p.closeAmmo = nil
		}
	}
	return first
}

// Run runs a spec: New, then Engine.Run.
func Run(ctx context.Context, spec *config.Spec, opts Options) (*Result, error) {
	e, err := New(ctx, spec, opts)
	if err != nil {
		return nil, err
	}
	return e.Run(ctx)
}

// Progress returns a live view of the run; safe to call at any time.
func (e *Engine) Progress() Progress {
	a := e.agg.Load()
	if a == nil {
		return Progress{}
	}
	p := Progress{Progress: a.Progress()}
	for _, pl := range e.pools {
		p.InFlight += pl.inflight.Load()
		p.Instances += pl.instances.Load()
		if !pl.ended.Load() {
			p.TargetRPS += pl.plan.RateAt(p.Elapsed)
		}
	}
	if n := e.opts.Share.Count; n > 1 {
		p.TargetRPS /= float64(n)
	}
	return p
}

var (
	errDuration = errors.New("duration passed")
	errAutostop = errors.New("autostop")
	errDone     = errors.New("pools done")
)

// Run runs the test and returns its result. It returns an error only when
// the run could not start or a sink failed; a canceled context ends the run
// early with Stop = StopCanceled and the result so far.
func (e *Engine) Run(ctx context.Context) (*Result, error) {
	if !e.ran.CompareAndSwap(false, true) {
		return nil, errs.New(errs.FailedPrecondition, "an engine runs once")
	}
	defer e.Close()
	if !e.opts.StartAt.IsZero() {
		if err := sleepCtx(ctx, time.Until(e.opts.StartAt)); err != nil {
			return nil, errs.Wrap(errs.Canceled, err, "canceled before the start time")
		}
	}
	// issue ends the taking of tokens; shoot (the caller's context) also
	// cancels shots in flight.
	issue, stopIssue := context.WithCancelCause(ctx)
	defer stopIssue(nil)
	e.stopIssue = stopIssue
	e.limit = int64(e.spec.Duration.D())
	var stopMu sync.Mutex
	var violation *aggregate.Violation

	e.mono = monotonicNow()
	e.start = time.Now()
	if e.mono != 0 {
		// Take the two readings as close together as possible.
		e.mono = (e.mono + monotonicNow()) / 2
	}
	start := e.start
	agg := aggregate.New(aggregate.Options{
		Start:        start,
		Buffer:       e.opts.Buffer,
		OverdueAfter: time.Duration(e.overdue),
		Sinks:        e.opts.Sinks,
		Rules:        e.rules,
		OnStop: func(v aggregate.Violation) {
			stopMu.Lock()
			violation = &v
			stopMu.Unlock()
			stopIssue(errAutostop)
		},
	})
	e.agg.Store(agg)
	aggDone := make(chan error, 1)
	go func() { aggDone <- agg.Run(context.WithoutCancel(ctx)) }()

	if d := e.spec.Duration.D(); d > 0 {
		t := time.AfterFunc(d, func() { stopIssue(errDuration) })
		defer t.Stop()
	}
	stopObserve := e.observe(issue)

	var wg sync.WaitGroup
	for _, p := range e.pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.runPool(issue, ctx, p, agg)
		}()
	}
	wg.Wait()
	stopIssue(errDone)
	agg.Close()
	sinkErr := <-aggDone
	stopObserve()

	res := &Result{Result: agg.Result(), Interrupted: e.interrupt.Load(), Share: e.opts.Share}
	switch cause := context.Cause(issue); {
	case ctx.Err() != nil:
		res.Stop = StopCanceled
	case errors.Is(cause, errAutostop):
		res.Stop = StopAutostop
	case errors.Is(cause, errDuration):
		res.Stop = StopDuration
	default:
		res.Stop = StopDone
	}
	stopMu.Lock()
	res.Verdict = aggregate.Judge(res.Result, e.rules, violation)
	stopMu.Unlock()
	if e.opts.Observer != nil {
		p := e.Progress()
		p.Done = true
		e.opts.Observer(p)
	}
	if sinkErr != nil {
		return res, errs.Wrap(errs.Unavailable, sinkErr, "writing samples")
	}
	return res, nil
}

// observe calls the observer every interval until the returned function is
// called.
func (e *Engine) observe(ctx context.Context) func() {
	if e.opts.Observer == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(e.opts.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				e.opts.Observer(e.Progress())
			case <-done:
				return
			}
		}
	}()
	return func() { close(done); <-finished }
}

// elapsed returns nanoseconds since the start on the monotonic clock.
func (e *Engine) elapsed() int64 { return int64(time.Since(e.start)) }

// runPool starts instances on the pool's start-up schedule and waits for
// them.
func (e *Engine) runPool(issue, shoot context.Context, p *pool, agg *aggregate.Aggregator) {
	// The pool's own context ends when its schedule or ammo does, waking
	// instances that hold later tokens and the start-up loop.
	issue, p.end = context.WithCancel(issue)
	defer p.finish()
	var wg sync.WaitGroup
	defer wg.Wait()
	w := newTimerWaiter()
	defer w.close()
	n := 0
	for n < p.spec.Instances && !p.ended.Load() {
		at, ok := p.startup.Next(time.Duration(e.elapsed()))
		if !ok {
			break
		}
		if !e.waitUntil(issue, w, int64(at)) {
			break
		}
		if p.ended.Load() {
			break
		}
		g, err := p.factory.New(shoot, gun.Env{Instance: n, Now: e.elapsed, Report: agg.Report, Phases: e.phases})
		if err != nil {
			// A gun that cannot be made is a failed shot, not a crash:
			// it is reported once, and the pool goes on without it.
			agg.Report(aggregate.Sample{Tag: p.spec.ID, Intended: int64(at), Sent: e.elapsed(), Done: e.elapsed(), Class: aggregate.Other})
			n++
			continue
		}
		p.instances.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer p.instances.Add(-1)
			defer g.Close()
			e.instance(issue, shoot, p, g, agg)
		}()
		n++
	}
}

// instance is the shooting loop of one instance.
func (e *Engine) instance(issue, shoot context.Context, p *pool, g gun.Gun, agg *aggregate.Aggregator) {
	var w waiter
	if e.spec.Timer == config.TimerCoarse {
		w = newTimerWaiter()
	} else {
		w = newWaiter(e.mono, e.spec.Resolution())
	}
	defer w.close()
	shot := &gun.Shot{}
	discard := p.spec.DiscardOverflow
	for !p.ended.Load() {
		at, ok := p.tokens.Next(time.Duration(e.elapsed()))
		if !ok {
			// The schedule is over, but other instances may hold its last
			// tokens: they fire them; only the start-up loop stops.
			p.ended.Store(true)
			return
		}
		intended := int64(at)
		if e.limit > 0 && intended >= e.limit {
			// Tokens past the duration are never fired, however early
			// they are taken.
			e.stopIssue(errDuration)
			return
		}
		if !e.waitUntil(issue, w, intended) {
			return
		}
		sent := e.elapsed()
		if discard && sent-intended > e.overdue {
			agg.Discard()
			continue
		}
		a, err := p.provider.Acquire(shoot)
		if err != nil {
			// ErrEnd, a canceled context or a broken ammo file: the pool
			// is over. A bad ammo line is reported as one failed shot.
			if !errors.Is(err, ammo.ErrEnd) && shoot.Err() == nil {
				agg.Report(aggregate.Sample{Tag: p.spec.ID, Intended: intended, Sent: sent, Done: e.elapsed(), Class: aggregate.Other})
			}
			p.finish()
			return
		}
		shot.Reset()
		shot.Ammo, shot.Intended = a, intended
		p.inflight.Add(1)
		sent = e.elapsed()
		g.Shoot(shoot, shot)
		done := e.elapsed()
		p.inflight.Add(-1)
		tag := a.Tag
		if tag == "" {
			tag = p.spec.ID
		}
		p.provider.Release(a)
		if shot.Class == aggregate.Canceled && shoot.Err() != nil {
			e.interrupt.Add(1)
			return
		}
		agg.Report(aggregate.Sample{
			Tag: tag, Intended: intended, Sent: sent, Done: done,
			Connect: shot.Connect, Send: shot.Send, Receive: shot.Receive,
			BytesOut: shot.BytesOut, BytesIn: shot.BytesIn,
			Code: shot.Code, Errno: shot.Errno, Proto: shot.Proto, Class: shot.Class,
		})
	}
}

// waitUntil sleeps until the run's clock reaches at (nanoseconds). It
// returns false if ctx ends first.
func (e *Engine) waitUntil(ctx context.Context, w waiter, at int64) bool {
	d := at - e.elapsed()
	if d <= 0 {
		return ctx.Err() == nil
	}
	return w.wait(ctx, at, time.Duration(d))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
