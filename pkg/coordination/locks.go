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
	// Metrics, if set, records wait and hold times and the Acquire calls
	// waiting.
	Metrics *Metrics
}

// LockOption configures one acquisition.
type LockOption func(*lockOptions)

type lockOptions struct{ ttl time.Duration }

// WithTTL lets others take the lock when this holder has not renewed it for
// ttl on their clocks; the holder renews it automatically every ttl/3
// while held, and gives it up on its own clock (its Context ends) when no
// renewal succeeded for 2/3 of ttl. Without a TTL the lock is held until
// released or the holder's Member dies. A TTL is at least a millisecond.
func WithTTL(ttl time.Duration) LockOption { return func(o *lockOptions) { o.ttl = ttl } }

func applyLockOptions(name string, opts []LockOption) (lockOptions, error) {
	var o lockOptions
	if err := meta.ValidateName("name", name); err != nil {
		return o, err
	}
	for _, f := range opts {
		f(&o)
	}
	if o.ttl < 0 || (o.ttl > 0 && o.ttl < time.Millisecond) {
		return o, errs.Invalid("ttl", "ttl must be zero or at least 1ms, got %v", o.ttl)
	}
	return o, nil
}

// Locks acquires and releases Locks for this process. It is a manager
// runnable (on every replica) that keeps a cache of the namespace's Locks,
// so that waiters wake on changes instead of polling.
type Locks struct {
	cfg      LocksConfig
	informer *source.Informer
	clock    *versionClock

	mu      sync.Mutex
	known   map[meta.Key]*Lock // newest version this process wrote or read
	floor   map[meta.Key]int64 // highest token seen per lock
	holders map[meta.Key]map[*Held]struct{}
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
	if err := requireKind(cfg.Store, KindLock); err != nil {
		return nil, err
	}
	if cfg.Logger.GetSink() == nil {
		cfg.Logger = logr.Discard()
	}
	l := &Locks{cfg: cfg, clock: newVersionClock(), known: map[meta.Key]*Lock{}, floor: map[meta.Key]int64{},
		holders: map[meta.Key]map[*Held]struct{}{}, waiters: map[meta.Key]map[chan struct{}]struct{}{}}
	l.informer = source.NewInformer(cfg.Store, KindLock, source.InformerOptions{Namespace: cfg.Namespace, Logger: cfg.Logger})
	l.informer.AddEventHandler(source.HandlerFuncs{
		AddFunc:    func(o meta.Object, _ bool) { l.clock.observe(o); l.learn(o.(*Lock)); l.wake(meta.KeyOf(o)) },
		UpdateFunc: func(_, n meta.Object) { l.clock.observe(n); l.learn(n.(*Lock)); l.wake(meta.KeyOf(n)) },
		DeleteFunc: func(o meta.Object) { l.clock.forget(meta.KeyOf(o)); l.deleted(o.(*Lock)); l.wake(meta.KeyOf(o)) },
	})
	return l, nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (l *Locks) NeedLeaderElection() bool { return false }

// Start runs the lock cache until ctx ends.
func (l *Locks) Start(ctx context.Context) error {
	changes, unsubscribe := l.cfg.Membership.subscribe()
	defer unsubscribe()
	done := make(chan struct{})
	defer func() { <-done }()
	go func() {
		defer close(done)
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
	uid      string // of the lock document this hold wrote
	ctx      context.Context
	cancel   context.CancelCauseFunc
	acquired time.Time
	expiry   *time.Timer // ends ctx when a TTL lock goes unrenewed; nil without TTL
	mu       sync.Mutex
	cur      *Lock
	renewed  time.Time // start of the last successful write
	released bool
}

// Context is cancelled when the lock is lost (a TTL lock was not renewed
// in time, it was taken over, or this process's Member session ended) or
// released; context.Cause says which. Critical sections should run under
// it.
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
	o, err := applyLockOptions(name, opts)
	if err != nil {
		return nil, err
	}
	s, err := l.cfg.Membership.WaitSession(ctx)
	if err != nil {
		return nil, err
	}
	h, _, err := l.try(ctx, s, l.lockKey(name), o)
	if errs.IsConflict(err) || errs.IsAlreadyExists(err) {
		return nil, nil // another process took it first
	}
	return h, err
}

// Acquire blocks until it holds the lock named name or ctx ends. It wakes
// on changes of the lock, on members leaving, and when the holder's TTL
// runs out on this process's clock. Waiters are not served in order: when
// the lock is freed, every waiter tries and one compare-and-swap wins, so
// under heavy contention a waiter can lose many times in a row.
func (l *Locks) Acquire(ctx context.Context, name string, opts ...LockOption) (*Held, error) {
	o, err := applyLockOptions(name, opts)
	if err != nil {
		return nil, err
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
			if ctx.Err() != nil {
				return nil, errs.Wrap(errs.CodeOf(ctx.Err()), ctx.Err(), "waiting for lock %s", key)
			}
			return nil, err
		}
		if h != nil {
			l.cfg.Metrics.waited(key, time.Since(start).Seconds())
			return h, nil
		}
		if err != nil { // lost a race: look again soon, the cache will catch up
			retryIn = 5 * time.Millisecond
		}
		l.cfg.Metrics.waiting(key, 1)
		woken := waitWake(ctx, wake, retryIn)
		l.cfg.Metrics.waiting(key, -1)
		if !woken {
			return nil, errs.Wrap(errs.CodeOf(ctx.Err()), ctx.Err(), "waiting for lock %s", key)
		}
	}
}

// try makes one attempt. When the lock is held by another, it returns how
// long until the holder's TTL runs out (0: no TTL, wait for an event). A
// lost race is errs.Conflict or errs.AlreadyExists.
func (l *Locks) try(ctx context.Context, s *Session, key meta.Key, o lockOptions) (*Held, time.Duration, error) {
	cur, fresh := l.newest(key), false
	for attempt := 0; ; attempt++ {
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
			cur, fresh = got, true
		}
		free, retryIn, err := l.free(ctx, cur)
		if err != nil {
			return nil, 0, err
		}
		if !free {
			if fresh {
				return nil, retryIn, nil
			}
			cur = nil // the cache may be behind a release: ask the store
			continue
		}
		next := meta.DeepCopy(cur)
		now := meta.Now()
		next.Spec = LockSpec{Holder: s.Name, HolderUID: s.UID + "/" + newOwnerID(), Token: max(cur.Spec.Token, l.tokenFloor(key)) + 1,
			TTLMillis: millis(o.ttl), AcquireTime: now, RenewTime: now}
		start := time.Now()
		err = l.cfg.Store.Update(ctx, next)
		if err == nil {
			return l.held(s, key, next, o, start), 0, nil
		}
		if !errs.IsConflict(err) && !errs.IsNotFound(err) {
			return nil, 0, err
		}
		l.forgetKnown(key) // the cache was behind, or another process won
		if fresh || attempt > 0 {
			return nil, 0, errs.Wrap(errs.Conflict, err, "lock %s changed", key)
		}
		cur = nil // read it afresh once
	}
}

func (l *Locks) create(ctx context.Context, s *Session, key meta.Key, o lockOptions) (*Held, time.Duration, error) {
	now := meta.Now()
	// The token continues from the highest one seen, should the lock have
	// been deleted.
	lk := &Lock{ObjectMeta: meta.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
		Spec: LockSpec{Holder: s.Name, HolderUID: s.UID + "/" + newOwnerID(), Token: l.tokenFloor(key) + 1,
			TTLMillis: millis(o.ttl), AcquireTime: now, RenewTime: now}}
	start := time.Now()
	if err := l.cfg.Store.Create(ctx, lk); err != nil {
		return nil, 0, err
	}
	return l.held(s, key, lk, o, start), 0, nil
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

// held records a lock this process just wrote, whose write started at
// start.
func (l *Locks) held(s *Session, key meta.Key, lk *Lock, o lockOptions, start time.Time) *Held {
	l.learn(lk)
	ctx, cancel := context.WithCancelCause(context.Background())
	h := &Held{Key: key, Token: lk.Spec.Token, locks: l, uid: lk.UID, ctx: ctx, cancel: cancel, acquired: start, cur: lk, renewed: start}
	l.mu.Lock()
	if l.holders[key] == nil {
		l.holders[key] = map[*Held]struct{}{}
	}
	l.holders[key][h] = struct{}{}
	l.mu.Unlock()
	go func() {
		select {
		case <-s.Done():
			cancel(errs.New(errs.Aborted, "lock %s lost: member %s ended: %v", key, s.Name, s.Err()))
		case <-ctx.Done():
		}
		l.mu.Lock()
		delete(l.holders[key], h)
		if len(l.holders[key]) == 0 {
			delete(l.holders, key)
		}
		l.mu.Unlock()
	}()
	if o.ttl > 0 {
		validFor := o.ttl * 2 / 3
		h.expiry = time.AfterFunc(time.Until(start.Add(validFor)), func() {
			cancel(errs.New(errs.DeadlineExceeded, "lock %s lost: not renewed within %v", key, validFor))
		})
		go h.renew(o.ttl)
	}
	l.cfg.Logger.V(1).Info("lock acquired", "lock", key, "token", lk.Spec.Token)
	return h
}

// renew keeps a TTL lock alive until it is released or lost: every ttl/3,
// retrying failures every ttl/12, until 2/3 of ttl after the start of the
// last successful renewal, when the expiry timer ends the context.
func (h *Held) renew(ttl time.Duration) {
	period, retry, validFor := ttl/3, max(ttl/12, time.Millisecond/4), ttl*2/3
	t := time.NewTimer(period)
	defer t.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
		}
		h.mu.Lock()
		if h.released || h.ctx.Err() != nil {
			h.mu.Unlock()
			return
		}
		next := meta.DeepCopy(h.cur)
		next.Spec.RenewTime = meta.Now()
		start := time.Now()
		ctx, cancel := context.WithDeadline(h.ctx, h.renewed.Add(validFor))
		err := h.locks.cfg.Store.Update(ctx, next)
		cancel()
		switch {
		case err == nil:
			h.cur, h.renewed = next, start
			h.expiry.Reset(time.Until(start.Add(validFor)))
			h.locks.learn(next)
			t.Reset(period)
		case errs.IsConflict(err), errs.IsNotFound(err):
			h.cancel(errs.Wrap(errs.Aborted, err, "lock %s lost: taken over", h.Key))
		default:
			t.Reset(retry)
		}
		h.mu.Unlock()
	}
}

// Release gives the lock up; only this holder can (compare-and-swap on the
// version it holds). Releasing a lost lock is errs.Conflict; releasing
// twice is a no-op.
func (h *Held) Release(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return nil
	}
	if cause := context.Cause(h.ctx); cause != nil {
		h.released = true
		h.stopExpiry()
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
	h.stopExpiry()
	h.locks.cfg.Metrics.held(h.Key, time.Since(h.acquired).Seconds())
	if err != nil {
		h.cancel(errs.Wrap(errs.Aborted, err, "lock %s lost: taken over", h.Key))
		return errs.Wrap(errs.Conflict, err, "lock %s was taken over before release", h.Key)
	}
	h.cancel(errs.New(errs.Canceled, "lock %s released", h.Key))
	h.locks.learn(next)
	return nil
}

func (h *Held) stopExpiry() {
	if h.expiry != nil {
		h.expiry.Stop()
	}
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

// learn records lk as seen: the newest version, the token floor, and
// ends this process's holds that lk shows were taken over.
func (l *Locks) learn(lk *Lock) {
	k := lk.Key()
	l.mu.Lock()
	if cur := l.known[k]; cur == nil || newer(lk, cur) {
		l.known[k] = lk
	}
	l.floor[k] = max(l.floor[k], lk.Spec.Token)
	var lost []*Held
	for h := range l.holders[k] {
		if lk.Spec.Token > h.Token {
			lost = append(lost, h)
		}
	}
	l.mu.Unlock()
	for _, h := range lost {
		h.cancel(errs.New(errs.Aborted, "lock %s lost: taken over (token %d)", k, lk.Spec.Token))
	}
}

// deleted handles the deletion of a lock: its holds here are lost.
func (l *Locks) deleted(lk *Lock) {
	k := lk.Key()
	l.mu.Lock()
	delete(l.known, k)
	var lost []*Held
	for h := range l.holders[k] {
		if lk.UID == h.uid {
			lost = append(lost, h)
		}
	}
	l.mu.Unlock()
	for _, h := range lost {
		h.cancel(errs.New(errs.Aborted, "lock %s lost: deleted", k))
	}
}

func (l *Locks) tokenFloor(key meta.Key) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.floor[key]
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
