package coordination

import (
	"context"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// Default leader-election durations (client-go's).
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// ElectorConfig configures an Elector.
type ElectorConfig struct {
	// Store holds the Lease; its scheme must include the coordination
	// kinds (AddToScheme).
	Store store.Store
	// Lease names the Lease object (namespace and name).
	Lease meta.Key
	// Identity is this candidate's name (usually its Member name).
	Identity string
	// LeaseDuration is how long followers wait, on their own clocks,
	// after the last change of the lease before taking it over.
	LeaseDuration time.Duration
	// RenewDeadline is how long the leader keeps trying to renew before
	// it gives leadership up; must be less than LeaseDuration.
	RenewDeadline time.Duration
	// RetryPeriod is the wait between attempts; must be less than
	// RenewDeadline.
	RetryPeriod time.Duration
	// ReleaseOnCancel gives the lease up (holder cleared) when Run's
	// context ends while leading, so that a successor need not wait for
	// the lease to expire.
	ReleaseOnCancel bool
	// OnStartedLeading is called (in its own goroutine) with a context
	// that is cancelled when leadership ends; it must then return.
	OnStartedLeading func(ctx context.Context)
	// OnStoppedLeading is called when leadership ends, once the
	// OnStartedLeading callback has returned.
	OnStoppedLeading func()
	// OnNewLeader is called when the observed leader changes (including
	// to this candidate).
	OnNewLeader func(identity string)
	// Logger receives transitions.
	Logger logr.Logger
	// Metrics, if set, records leadership and transitions.
	Metrics *Metrics
}

// Elector campaigns for a Lease with client-go's semantics and fencing:
// the lease's LeaseTransitions is the leader's token. It implements
// manager.LeaderElector.
//
// A leader considers itself leading for RenewDeadline after the start of
// its last successful write of the lease, on its own clock; the others
// take the lease over only LeaseDuration after they first saw that
// version, on theirs. So leadership as reported by IsLeader never
// overlaps between candidates, even if the leader's goroutines stall.
type Elector struct {
	cfg   ElectorConfig
	clock *versionClock

	mu       sync.Mutex
	leading  bool
	renewed  time.Time // start of the last successful write while leading
	token    int64
	maxToken int64 // highest LeaseTransitions seen
	leader   string
	lease    *Lease // last lease this candidate wrote or read
	running  bool
}

// NewElector validates cfg (durations default to 15s/10s/2s) and returns
// an elector.
func NewElector(cfg ElectorConfig) (*Elector, error) {
	if cfg.Store == nil {
		return nil, errs.Invalid("store", "store is required")
	}
	if cfg.Identity == "" {
		return nil, errs.Invalid("identity", "identity is required")
	}
	if err := meta.ValidateName("lease.name", cfg.Lease.Name); err != nil {
		return nil, err
	}
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = DefaultLeaseDuration
	}
	if cfg.RenewDeadline == 0 {
		cfg.RenewDeadline = DefaultRenewDeadline
	}
	if cfg.RetryPeriod == 0 {
		cfg.RetryPeriod = DefaultRetryPeriod
	}
	switch {
	case cfg.LeaseDuration <= cfg.RenewDeadline:
		return nil, errs.Invalid("leaseDuration", "lease duration %v must be greater than the renew deadline %v", cfg.LeaseDuration, cfg.RenewDeadline)
	case cfg.RenewDeadline <= cfg.RetryPeriod:
		return nil, errs.Invalid("renewDeadline", "renew deadline %v must be greater than the retry period %v", cfg.RenewDeadline, cfg.RetryPeriod)
	case cfg.RetryPeriod <= 0:
		return nil, errs.Invalid("retryPeriod", "retry period must be positive")
	}
	if err := requireKind(cfg.Store, KindLease); err != nil {
		return nil, err
	}
	if cfg.Logger.GetSink() == nil {
		cfg.Logger = logr.Discard()
	}
	return &Elector{cfg: cfg, clock: newVersionClock()}, nil
}

// IsLeader reports whether this candidate currently leads: it won the
// lease and its last renewal started less than RenewDeadline ago.
func (e *Elector) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.validLocked()
}

func (e *Elector) validLocked() bool {
	return e.leading && time.Since(e.renewed) < e.cfg.RenewDeadline
}

// Leader returns the identity of the last observed leader.
func (e *Elector) Leader() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leader
}

// Token returns the fencing token of the current leadership (0 when not
// leading).
func (e *Elector) Token() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.validLocked() {
		return 0
	}
	return e.token
}

// FenceName is the name under which the leader's writes are fenced
// (store.WithFence(e.FenceName(), e.Token())).
func (e *Elector) FenceName() string { return "Lease/" + e.cfg.Lease.String() }

// Run campaigns until ctx ends. Once leading it calls onStarted and
// OnStartedLeading, each in its own goroutine, with a context that ends
// with the leadership; they must return when it ends, and Run waits for
// them. When leadership ends, OnStoppedLeading is called after they
// returned. If leadership is lost, Run returns an error (errs.Aborted).
// When ctx ends it returns nil, after giving the lease up if
// ReleaseOnCancel (once the callbacks above have returned, so that a
// successor never overlaps with them). An Elector runs one campaign at a
// time.
func (e *Elector) Run(ctx context.Context, onStarted func(ctx context.Context)) error {
	e.mu.Lock()
	if e.running {
		e.mu.Unlock()
		return errs.New(errs.FailedPrecondition, "elector for lease %s is already running", e.cfg.Lease)
	}
	e.running = true
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.running = false
		e.mu.Unlock()
	}()
	defer e.cfg.Metrics.setLeader(e.cfg.Lease, false)
	if !e.acquire(ctx) {
		return nil // ctx ended while following
	}
	leadCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, f := range []func(context.Context){onStarted, e.cfg.OnStartedLeading} {
		if f != nil {
			wg.Add(1)
			go func() { defer wg.Done(); f(leadCtx) }()
		}
	}
	err := e.renew(ctx)
	e.mu.Lock()
	e.leading = false
	e.mu.Unlock()
	e.cfg.Metrics.setLeader(e.cfg.Lease, false)
	cancel()
	wg.Wait()
	if e.cfg.OnStoppedLeading != nil {
		e.cfg.OnStoppedLeading()
	}
	if err == nil && e.cfg.ReleaseOnCancel {
		e.release() // only now may a successor start leading
	}
	return err
}

// acquire retries until this candidate holds the lease or ctx ends.
//
// While it follows, it watches the Lease: every change it sees starts the
// change's lease duration on this process's clock as soon as the event
// arrives, and wakes an attempt at once (a released or deleted lease is
// taken without waiting). Between changes it sleeps until the lease it
// last saw expires, or RetryPeriod (with jitter) if that comes first, so
// a dead leader's lease is taken over about LeaseDuration after its last
// renewal reached this process, not up to a RetryPeriod later as with
// polling alone. Polling stays as the fallback when the watch is down.
func (e *Elector) acquire(ctx context.Context) bool {
	wctx, stop := context.WithCancel(ctx)
	changed := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); e.watchLease(wctx, changed) }()
	defer func() { stop(); wg.Wait() }()
	for {
		ok, err := e.tryAcquireOrRenew(ctx, time.Now())
		if ok {
			e.cfg.Logger.Info("acquired lease", "lease", e.cfg.Lease, "token", e.Token())
			return true
		}
		wait := jitter(e.cfg.RetryPeriod)
		if left, ok := e.expiresIn(); ok && err == nil && left < wait {
			// After a failed attempt the full retry period applies, so
			// that an unreachable store is not retried in a tight loop.
			wait = max(left, 0)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-changed:
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			return false
		}
	}
}

// expiresIn returns how long until the lease last seen expires on this
// process's clock, and false if none was seen or it has no holder.
func (e *Elector) expiresIn() (time.Duration, bool) {
	e.mu.Lock()
	l := e.lease
	e.mu.Unlock()
	if l == nil || l.Spec.HolderIdentity == "" {
		return 0, false
	}
	first, ok := e.clock.seenAt(l)
	if !ok { // the watch saw a newer version: the next attempt reads it
		return 0, false
	}
	return fromMillis(l.Spec.LeaseDurationMillis) - e.clock.now().Sub(first), true
}

// watchLease records on the elector's clock every change of the lease that
// a watch delivers, and signals changed after each, until ctx ends. A
// watch that fails is opened again after RetryPeriod; changes missed
// meanwhile are seen by the next attempt's read, later, which only
// postpones an expiry.
func (e *Elector) watchLease(ctx context.Context, changed chan<- struct{}) {
	for {
		events, err := e.cfg.Store.Watch(ctx, KindLease, store.WatchOptions{Namespace: e.cfg.Lease.Namespace})
		if err == nil {
			for ev := range events {
				if ev.Object == nil || ev.Object.GetObjectMeta().Key() != e.cfg.Lease {
					continue
				}
				if ev.Type != store.Deleted {
					e.clock.observe(ev.Object)
				}
				select {
				case changed <- struct{}{}:
				default:
				}
			}
		}
		if !sleepFor(ctx, e.cfg.RetryPeriod) {
			return
		}
	}
}

// renew keeps the lease until ctx ends (nil) or no renewal succeeds
// within RenewDeadline of the last successful one (an error), or the
// lease is found taken (an error at once).
func (e *Elector) renew(ctx context.Context) error {
	for {
		e.mu.Lock()
		renewed := e.renewed
		e.mu.Unlock()
		if !sleepFor(ctx, time.Until(renewed.Add(e.cfg.RetryPeriod))) {
			return nil
		}
		deadline := renewed.Add(e.cfg.RenewDeadline)
		for {
			var err error
			if time.Now().Before(deadline) {
				rctx, cancel := context.WithDeadline(ctx, deadline)
				var ok bool
				ok, err = e.tryAcquireOrRenew(rctx, time.Now())
				cancel()
				if ok {
					break
				}
				if ctx.Err() != nil {
					return nil
				}
			}
			if errs.IsConflict(err) || !time.Now().Before(deadline) {
				if err == nil || !errs.IsConflict(err) {
					err = errs.New(errs.DeadlineExceeded, "could not renew within %v", e.cfg.RenewDeadline)
				}
				e.cfg.Logger.Info("lost lease", "lease", e.cfg.Lease, "reason", err.Error())
				return errs.Wrap(errs.Aborted, err, "lost lease %s", e.cfg.Lease)
			}
			if !sleepFor(ctx, min(e.cfg.RetryPeriod/4, time.Until(deadline))) {
				return nil
			}
		}
	}
}

// tryAcquireOrRenew makes one attempt, which started at start. While
// leading, errs.Conflict means the lease was taken (or deleted).
func (e *Elector) tryAcquireOrRenew(ctx context.Context, start time.Time) (bool, error) {
	now := meta.Now()
	e.mu.Lock()
	leading, token, floor := e.leading, e.token, e.maxToken
	e.mu.Unlock()
	cur := &Lease{}
	err := e.cfg.Store.Get(ctx, e.cfg.Lease, cur)
	if errs.IsNotFound(err) {
		if leading {
			return false, errs.New(errs.Conflict, "lease %s was deleted", e.cfg.Lease)
		}
		// The token continues from the highest one seen, should the lease
		// have been deleted.
		l := &Lease{ObjectMeta: meta.ObjectMeta{Namespace: e.cfg.Lease.Namespace, Name: e.cfg.Lease.Name},
			Spec: LeaseSpec{HolderIdentity: e.cfg.Identity, LeaseDurationMillis: millis(e.cfg.LeaseDuration),
				AcquireTime: now, RenewTime: now, LeaseTransitions: floor + 1}}
		if err := e.cfg.Store.Create(ctx, l); err != nil {
			return false, err
		}
		e.won(l, start, true)
		return true, nil
	}
	if err != nil {
		return false, err
	}
	e.observe(cur)
	holder := cur.Spec.HolderIdentity
	if leading && (holder != e.cfg.Identity || cur.Spec.LeaseTransitions != token) {
		return false, errs.New(errs.Conflict, "lease %s was taken by %q (token %d)", e.cfg.Lease, holder, cur.Spec.LeaseTransitions)
	}
	if !leading && holder != "" && holder != e.cfg.Identity &&
		e.clock.expiresIn(cur, fromMillis(cur.Spec.LeaseDurationMillis)) > 0 {
		return false, nil
	}
	next := meta.DeepCopy(cur)
	next.Spec.RenewTime = now
	next.Spec.LeaseDurationMillis = millis(e.cfg.LeaseDuration)
	if !leading {
		// Every acquisition starts a term with a new token, even one that
		// finds this identity's stale record.
		next.Spec.HolderIdentity = e.cfg.Identity
		next.Spec.AcquireTime = now
		next.Spec.LeaseTransitions = max(cur.Spec.LeaseTransitions, floor) + 1
	}
	if err := e.cfg.Store.Update(ctx, next); err != nil {
		return false, err
	}
	e.won(next, start, !leading)
	return true, nil
}

func (e *Elector) won(l *Lease, start time.Time, acquired bool) {
	e.clock.observe(l)
	e.mu.Lock()
	e.lease = l
	e.leading = true
	e.renewed = start
	e.token = l.Spec.LeaseTransitions
	e.maxToken = max(e.maxToken, l.Spec.LeaseTransitions)
	e.mu.Unlock()
	e.setLeader(e.cfg.Identity)
	if acquired {
		e.cfg.Metrics.transition(e.cfg.Lease)
	}
	e.cfg.Metrics.setLeader(e.cfg.Lease, true)
}

func (e *Elector) observe(l *Lease) {
	e.mu.Lock()
	e.lease = l
	e.maxToken = max(e.maxToken, l.Spec.LeaseTransitions)
	e.mu.Unlock()
	e.setLeader(l.Spec.HolderIdentity)
}

func (e *Elector) setLeader(id string) {
	e.mu.Lock()
	changed := e.leader != id
	e.leader = id
	e.mu.Unlock()
	if changed && id != "" && e.cfg.OnNewLeader != nil {
		e.cfg.OnNewLeader(id)
	}
}

// release clears the holder if this candidate still holds the lease.
func (e *Elector) release() {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RenewDeadline)
	defer cancel()
	e.mu.Lock()
	l := e.lease
	e.mu.Unlock()
	if l == nil || l.Spec.HolderIdentity != e.cfg.Identity {
		return
	}
	next := meta.DeepCopy(l)
	next.Spec.HolderIdentity = ""
	next.Spec.RenewTime = meta.Now()
	if err := e.cfg.Store.Update(ctx, next); err != nil {
		e.cfg.Logger.Info("could not release lease", "lease", e.cfg.Lease, "error", err.Error())
		return
	}
	e.observe(next)
	e.cfg.Logger.Info("released lease", "lease", e.cfg.Lease)
}

func sleepFor(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// jitter returns d plus up to 20% more (client-go's jitter factor).
func jitter(d time.Duration) time.Duration {
	return d + time.Duration(randInt63n(int64(d)/5+1))
}
