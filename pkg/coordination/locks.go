package coordination

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
	"github.com/capstanhq/capstan/pkg/store"
)

// LocksConfig configures Locks.
type LocksConfig struct {
	// Store holds the Locks; its scheme must include the coordination
	// kinds.
	Store store.Store
	// Membership is this process's membership: locks are held by its
	// current session.
	Membership *Membership
	// Namespace the Locks live in (default: the membership's).
	Namespace string
	// Logger receives lock transitions.
	Logger logr.Logger
	// Metrics, if set, records wait and hold times.
	Metrics *Metrics
}

// LockOption configures one acquisition.
type LockOption func(*lockOptions)

type lockOptions struct{ ttl time.Duration }

// WithTTL lets others take the lock when this holder has not renewed it for
// ttl on their clocks; the holder renews it automatically every ttl/3
// while held. Without a TTL the lock is held until released or the
// holder's Member dies.
func WithTTL(ttl time.Duration) LockOption { return func(o *lockOptions) { o.ttl = ttl } }

// Locks acquires and releases Locks for this process. It is a manager
// runnable (on every replica) that keeps a cache of the namespace's Locks,
// so that waiters wake on changes instead of polling.
type Locks struct {
	cfg      LocksConfig
	informer *source.Informer
	clock    *versionClock

	mu      sync.Mutex
	known   map[meta.Key]*Lock // newest version this process wrote or read
	waiters map[meta.Key]map[chan struct{}]struct{}
}

// NewLocks validates cfg and returns Locks; Start runs its cache.
func NewLocks(cfg LocksConfig) (*Locks, error) {
	if cfg.Store == nil {
		return nil, errs.Invalid("store", "store is required")
	}
	if cfg.Membership == nil {
		return nil, errs.Invalid("membership", "membership is required")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = cfg.Membership.cfg.Namespace
	}
	if err := meta.ValidateNamespace("namespace", cfg.Namespace); err != nil {
		return nil, err
	}
	if cfg.Logger.GetSink() == nil {
		cfg.Logger = logr.Discard()
	}
	l := &Locks{cfg: cfg, clock: newVersionClock(), known: map[meta.Key]*Lock{}, waiters: map[meta.Key]map[chan struct{}]struct{}{}}
	l.informer = source.NewInformer(cfg.Store, KindLock, source.InformerOptions{Namespace: cfg.Namespace, Logger: cfg.Logger})
	l.informer.AddEventHandler(source.HandlerFuncs{
		AddFunc:    func(o meta.Object, _ bool) { l.learn(o.(*Lock)); l.wake(meta.KeyOf(o)) },
		UpdateFunc: func(_, n meta.Object) { l.learn(n.(*Lock)); l.wake(meta.KeyOf(n)) },
		DeleteFunc: func(o meta.Object) { l.forgetKnown(meta.KeyOf(o)); l.wake(meta.KeyOf(o)) },
	})
	return l, nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (l *Locks) NeedLeaderElection() bool { return false }

// Start runs the lock cache until ctx ends.
func (l *Locks) Start(ctx context.Context) error {
	changes := l.cfg.Membership.Changes()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-changes:
				l.wakeAll() // a holder may have died
			}
		}
	}()
	return l.informer.Run(ctx)
}

// Held is a held lock. Its token is the fencing token of this
// acquisition.
type Held struct {
	// Key names the lock.
	Key meta.Key
	// Token is the fencing token: higher than any earlier holder's.
	Token int64

	locks    *Locks
	owner    string
	ctx      context.Context
	cancel   context.CancelCauseFunc
	acquired time.Time
	mu       sync.Mutex
	cur      *Lock
	released bool
}

// Context is cancelled when the lock is lost (its TTL ran out before a
// renewal, it was taken over, or this process's Member was deleted) or
// released. Critical sections should run under it.
func (h *Held) Context() context.Context { return h.ctx }

// Lost is closed when the context is done.
func (h *Held) Lost() <-chan struct{} { return h.ctx.Done() }

// FenceName is the name fenced writes use.
func (h *Held) FenceName() string { return "Lock/" + h.Key.String() }

// Fence returns the write option that makes a store write fail with
// errs.Conflict once a later holder of this lock has written the object.
func (h *Held) Fence() store.WriteOption { return store.WithFence(h.FenceName(), h.Token) }

// lockKey returns the key of the lock named name.
func (l *Locks) lockKey(name string) meta.Key {
	return meta.Key{Namespace: l.cfg.Namespace, Name: name}
}

// TryAcquire takes the lock named name if it is free now; it returns nil
// (and no error) if someone else holds it.
func (l *Locks) TryAcquire(ctx context.Context, name string, opts ...LockOption) (*Held, error) {
	if err := meta.ValidateName("name", name); err != nil {
		return nil, err
	}
	var o lockOptions
	for _, f := range opts {
		f(&o)
	}
	if o.ttl < 0 {
		return nil, errs.Invalid("ttl", "ttl must not be negative")
	}
	s, err := l.cfg.Membership.WaitSession(ctx)
	if err != nil {
		return nil, err
	}
	h, _, err := l.try(ctx, s, l.lockKey(name), o)
	return h, err
}

// Acquire blocks until it holds the lock named name or ctx ends. It wakes
// on changes of the lock, on members leaving, and when the holder's TTL
// runs out on this process's clock.
func (l *Locks) Acquire(ctx context.Context, name string, opts ...LockOption) (*Held, error) {
	if err := meta.ValidateName("name", name); err != nil {
		return nil, err
	}
	var o lockOptions
	for _, f := range opts {
		f(&o)
	}
	if o.ttl < 0 {
		return nil, errs.Invalid("ttl", "ttl must not be negative")
	}
	start := time.Now()
	key := l.lockKey(name)
	wake := l.addWaiter(key)
	defer l.removeWaiter(key, wake)
	for {
		s, err := l.cfg.Membership.WaitSession(ctx)
		if err != nil {
			return nil, err
		}
		h, retryIn, err := l.try(ctx, s, key, o)
		if err != nil && !errs.IsConflict(err) && !errs.IsAlreadyExists(err) {
			return nil, err
		}
		if h != nil {
			l.cfg.Metrics.waited(key, time.Since(start).Seconds())
			return h, nil
		}
		if err != nil { // lost a race: look again soon, the cache will catch up
			retryIn = 5 * time.Millisecond
		}
		if !waitWake(ctx, wake, retryIn) {
			return nil, errs.Wrap(errs.CodeOf(ctx.Err()), ctx.Err(), "waiting for lock %s", key)
		}
	}
}

// try makes one attempt. When the lock is held by another, it returns how
// long until the holder's TTL runs out (0: no TTL, wait for an event).
func (l *Locks) try(ctx context.Context, s *Session, key meta.Key, o lockOptions) (*Held, time.Duration, error) {
	cur := l.newest(key)
	if cur == nil {
		got := &Lock{}
		err := l.cfg.Store.Get(ctx, key, got)
		switch {
		case errs.IsNotFound(err):
			return l.create(ctx, s, key, o)
		case err != nil:
			return nil, 0, err
		}
		l.learn(got)
		cur = got
	}
	free, retryIn, err := l.free(ctx, cur)
	if err != nil || !free {
		return nil, retryIn, err
	}
	next := meta.DeepCopy(cur)
	owner := newOwnerID()
	now := meta.Now()
	next.Spec = LockSpec{Holder: s.Name, HolderUID: s.UID + "/" + owner, Token: cur.Spec.Token + 1,
		TTLMillis: millis(o.ttl), AcquireTime: now, RenewTime: now}
	if err := l.cfg.Store.Update(ctx, next); err != nil {
		if errs.IsConflict(err) || errs.IsNotFound(err) {
			l.forgetKnown(key) // read afresh next time
			return nil, 0, errs.Wrap(errs.Conflict, err, "lock %s changed", key)
		}
		return nil, 0, err
	}
	return l.held(s, key, owner, next, o), 0, nil
}

func (l *Locks) create(ctx context.Context, s *Session, key meta.Key, o lockOptions) (*Held, time.Duration, error) {
	owner := newOwnerID()
	now := meta.Now()
	lk := &Lock{ObjectMeta: meta.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
		Spec: LockSpec{Holder: s.Name, HolderUID: s.UID + "/" + owner, Token: 1, TTLMillis: millis(o.ttl), AcquireTime: now, RenewTime: now}}
	if err := l.cfg.Store.Create(ctx, lk); err != nil {
		return nil, 0, err
	}
	return l.held(s, key, owner, lk, o), 0, nil
}

// free reports whether cur can be taken now.
func (l *Locks) free(ctx context.Context, cur *Lock) (bool, time.Duration, error) {
	if cur.Spec.Holder == "" {
		return true, 0, nil
	}
	memberUID, _, _ := strings.Cut(cur.Spec.HolderUID, "/")
	alive, err := l.cfg.Membership.Alive(ctx, cur.Spec.Holder, memberUID)
	if err != nil {
		return false, 0, err
	}
	if !alive {
		return true, 0, nil
	}
	if cur.Spec.TTLMillis > 0 {
		left := l.clock.expiresIn(cur, fromMillis(cur.Spec.TTLMillis))
		if left <= 0 {
			return true, 0, nil
		}
		return false, left, nil
	}
	return false, 0, nil
}

func (l *Locks) held(s *Session, key meta.Key, owner string, lk *Lock, o lockOptions) *Held {
	l.learn(lk)
	ctx, cancel := context.WithCancelCause(context.Background())
	h := &Held{Key: key, Token: lk.Spec.Token, locks: l, owner: owner, ctx: ctx, cancel: cancel, acquired: time.Now(), cur: lk}
	go func() {
		select {
		case <-s.Done():
			cancel(errs.New(errs.Aborted, "member %s ended: %v", s.Name, s.Err()))
		case <-ctx.Done():
		}
	}()
	if o.ttl > 0 {
		go h.renew(o.ttl)
	}
	l.cfg.Logger.V(1).Info("lock acquired", "lock", key, "token", lk.Spec.Token)
	return h
}

// renew keeps a TTL lock alive until it is released or lost.
func (h *Held) renew(ttl time.Duration) {
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
		}
		h.mu.Lock()
		if h.released {
			h.mu.Unlock()
			return
		}
		next := meta.DeepCopy(h.cur)
		next.Spec.RenewTime = meta.Now()
		ctx, cancel := context.WithTimeout(h.ctx, ttl/3)
		err := h.locks.cfg.Store.Update(ctx, next)
		cancel()
		switch {
		case err == nil:
			h.cur = next
			h.locks.learn(next)
		case errs.IsConflict(err), errs.IsNotFound(err):
			h.cancel(errs.Wrap(errs.Aborted, err, "lock %s was taken over", h.Key))
		}
		h.mu.Unlock()
	}
}

// Release gives the lock up; only this holder can (compare-and-swap on the
// version it holds). Releasing a lost lock is errs.Conflict.
func (h *Held) Release(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return nil
	}
	if cause := context.Cause(h.ctx); cause != nil {
		h.released = true
		return errs.Wrap(errs.Conflict, cause, "lock %s was lost before release", h.Key)
	}
	next := meta.DeepCopy(h.cur)
	next.Spec.Holder, next.Spec.HolderUID = "", ""
	next.Spec.RenewTime = meta.Now()
	err := h.locks.cfg.Store.Update(ctx, next)
	if err != nil && !errs.IsConflict(err) && !errs.IsNotFound(err) {
		return err // transient: the caller may retry
	}
	h.released = true
	h.cancel(errs.New(errs.Canceled, "lock %s released", h.Key))
	h.locks.cfg.Metrics.held(h.Key, time.Since(h.acquired).Seconds())
	if err != nil {
		return errs.Wrap(errs.Conflict, err, "lock %s was taken over before release", h.Key)
	}
	h.locks.learn(next)
	return nil
}

// newest returns the newest known version of key (nil if none).
func (l *Locks) newest(key meta.Key) *Lock {
	l.mu.Lock()
	known := l.known[key]
	l.mu.Unlock()
	if c, ok := l.informer.Get(key); ok {
		cl := c.(*Lock)
		if known == nil || newer(cl, known) {
			return cl
		}
	}
	return known
}

func newer(a, b *Lock) bool {
	if a.UID != b.UID {
		return true // another incarnation: trust the cache
	}
	av, _ := meta.ParseResourceVersion(a.ResourceVersion)
	bv, _ := meta.ParseResourceVersion(b.ResourceVersion)
	return av > bv
}

func (l *Locks) learn(lk *Lock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if k := l.known[lk.Key()]; k == nil || newer(lk, k) {
		l.known[lk.Key()] = lk
	}
}

func (l *Locks) forgetKnown(key meta.Key) {
	l.mu.Lock()
	delete(l.known, key)
	l.mu.Unlock()
}

func (l *Locks) addWaiter(key meta.Key) chan struct{} {
	ch := make(chan struct{}, 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.waiters[key] == nil {
		l.waiters[key] = map[chan struct{}]struct{}{}
	}
	l.waiters[key][ch] = struct{}{}
	return ch
}

func (l *Locks) removeWaiter(key meta.Key, ch chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.waiters[key], ch)
	if len(l.waiters[key]) == 0 {
		delete(l.waiters, key)
	}
}

func (l *Locks) wake(key meta.Key) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch := range l.waiters[key] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (l *Locks) wakeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, set := range l.waiters {
		for ch := range set {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

func newOwnerID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// waitWake waits for a wake-up, for d if positive, or for ctx's end (false).
func waitWake(ctx context.Context, wake <-chan struct{}, d time.Duration) bool {
	var timer <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-wake:
	case <-timer:
	}
	return true
}
