package coordination

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
	"github.com/capstanhq/capstan/pkg/store"
)

// DefaultMemberLeaseDuration is how long a Member may go without renewing
// before others delete it.
const DefaultMemberLeaseDuration = 15 * time.Second

// MembershipConfig configures a Membership.
type MembershipConfig struct {
	// Store holds the Members; its scheme must include the coordination
	// kinds.
	Store store.Store
	// Namespace the Members live in.
	Namespace string
	// Group prefixes this process's Member name: Group-<random id>.
	Group string
	// LeaseDuration: others delete this Member when it has not been
	// renewed for this long on their clocks. Default 15s.
	LeaseDuration time.Duration
	// RenewInterval is how often this process renews; default a third of
	// LeaseDuration, at most half of it. A session whose renewals keep
	// failing ends (on this process's clock) half an interval before the
	// others may delete its Member.
	RenewInterval time.Duration
	// Logger receives membership changes.
	Logger logr.Logger
	// Metrics, if set, records the number of live members.
	Metrics *Metrics
}

// Session is one registration of this process: a Member that exists from
// registration until the process stops, finds it deleted, or cannot renew
// it in time. Work tied to a session (locks, leases, shards) stops when
// Done closes.
type Session struct {
	// Name and UID identify the Member.
	Name, UID string

	done        chan struct{}
	err         error
	deleted     chan struct{} // closed when the informer saw the Member deleted
	deletedOnce sync.Once
	seen        chan struct{} // closed when the informer has the Member
	seenOnce    sync.Once
}

// is reports whether o is the session's Member.
func (s *Session) is(o meta.Object) bool {
	m := o.GetObjectMeta()
	return s.Name == m.Name && s.UID == m.UID
}

// Done is closed when the session ends.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err says why the session ended (nil while it lasts or after a clean
// stop).
func (s *Session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// OwnerReference points at the session's Member, for objects that must
// disappear with it.
func (s *Session) OwnerReference() meta.OwnerReference {
	return meta.OwnerReference{Kind: KindMember, Name: s.Name, UID: s.UID}
}

func (s *Session) live() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Membership registers this process as a Member, renews it, watches the
// others and deletes the expired ones. It is a manager runnable that runs
// on every replica.
//
// When Start's context ends, the Member stays registered (and renewed)
// until the work bound to it has let go — a Sharder keeps it until its
// in-flight reconciles finished and its shards are handed over — so that
// no other replica takes that work over while it still runs here. Then
// the Member is deleted.
type Membership struct {
	cfg      MembershipConfig
	informer *source.Informer
	clock    *versionClock

	mu       sync.Mutex
	started  bool
	session  *Session
	sessions chan struct{} // closed and replaced when a session starts
	ready    chan struct{}
	stopped  chan struct{}
	subs     map[chan struct{}]struct{}
	holds    int
	released chan struct{} // signalled when holds drops
}

// NewMembership validates cfg and returns a Membership; Start runs it.
func NewMembership(cfg MembershipConfig) (*Membership, error) {
	if cfg.Store == nil {
		return nil, errs.Invalid("store", "store is required")
	}
	if err := meta.ValidateNamespace("namespace", cfg.Namespace); err != nil {
		return nil, err
	}
	if err := meta.ValidateName("group", cfg.Group); err != nil {
		return nil, err
	}
	if len(cfg.Group) > 200 {
		return nil, errs.Invalid("group", "group name is longer than 200 characters")
	}
	if err := requireKind(cfg.Store, KindMember); err != nil {
		return nil, err
	}
	if cfg.LeaseDuration < 0 {
		return nil, errs.Invalid("leaseDuration", "lease duration must not be negative")
	}
	if cfg.RenewInterval < 0 {
		return nil, errs.Invalid("renewInterval", "renew interval must not be negative")
	}
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = DefaultMemberLeaseDuration
	}
	if cfg.RenewInterval == 0 {
		cfg.RenewInterval = cfg.LeaseDuration / 3
	}
	if cfg.RenewInterval > cfg.LeaseDuration/2 || cfg.RenewInterval < time.Millisecond {
		return nil, errs.Invalid("renewInterval", "renew interval %v must be between 1ms and half the lease duration %v", cfg.RenewInterval, cfg.LeaseDuration)
	}
	if cfg.Logger.GetSink() == nil {
		cfg.Logger = logr.Discard()
	}
	m := &Membership{cfg: cfg, clock: newVersionClock(),
		sessions: make(chan struct{}), ready: make(chan struct{}), stopped: make(chan struct{}),
		subs: map[chan struct{}]struct{}{}, released: make(chan struct{}, 1)}
	m.informer = source.NewInformer(cfg.Store, KindMember, source.InformerOptions{Namespace: cfg.Namespace, Logger: cfg.Logger})
	m.informer.AddEventHandler(source.HandlerFuncs{
		AddFunc: func(o meta.Object, _ bool) {
			m.clock.observe(o)
			if s := m.Session(); s != nil && s.is(o) {
				s.seenOnce.Do(func() { close(s.seen) })
			}
			m.notify()
		},
		UpdateFunc: func(_, n meta.Object) { m.clock.observe(n) },
		DeleteFunc: func(o meta.Object) {
			m.clock.forget(meta.KeyOf(o))
			if s := m.Session(); s != nil && s.is(o) {
				s.deletedOnce.Do(func() { close(s.deleted) })
			}
			m.notify()
		},
	})
	return m, nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: membership
// runs on every replica.
func (m *Membership) NeedLeaderElection() bool { return false }

// Ready is closed once this process is registered and has seen the other
// members.
func (m *Membership) Ready() <-chan struct{} { return m.ready }

// Session returns the current session (nil before registration). It may
// have ended; WaitSession waits for a live one.
func (m *Membership) Session() *Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.session
}

// WaitSession waits for a live session. It fails when ctx ends or the
// membership has stopped (errs.FailedPrecondition).
func (m *Membership) WaitSession(ctx context.Context) (*Session, error) {
	select {
	case <-m.ready:
	case <-m.stopped:
		return nil, errs.New(errs.FailedPrecondition, "membership %s has stopped", m.cfg.Group)
	case <-ctx.Done():
		return nil, errs.Wrap(errs.CodeOf(ctx.Err()), ctx.Err(), "waiting for membership")
	}
	for {
		m.mu.Lock()
		s, next := m.session, m.sessions
		m.mu.Unlock()
		if s != nil && s.live() {
			return s, nil
		}
		select {
		case <-next:
		case <-m.stopped:
			return nil, errs.New(errs.FailedPrecondition, "membership %s has stopped", m.cfg.Group)
		case <-ctx.Done():
			return nil, errs.Wrap(errs.CodeOf(ctx.Err()), ctx.Err(), "waiting for membership")
		}
	}
}

// Live returns the names of the members of the group this process sees
// (itself included), sorted.
func (m *Membership) Live() []string {
	objs := m.informer.List(m.cfg.Namespace, nil)
	out := make([]string, 0, len(objs))
	for _, o := range objs {
		mem := o.(*Member)
		if mem.Spec.Group == m.cfg.Group && mem.DeletionTimestamp == nil {
			out = append(out, mem.Name)
		}
	}
	sort.Strings(out)
	return out
}

// Changes returns a channel that receives (coalesced) whenever a member
// joins or leaves. It stays subscribed for the Membership's lifetime.
func (m *Membership) Changes() <-chan struct{} {
	ch, _ := m.subscribe()
	return ch
}

// subscribe is Changes with a function that unsubscribes.
func (m *Membership) subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	m.mu.Lock()
	m.subs[ch] = struct{}{}
	m.mu.Unlock()
	return ch, func() {
		m.mu.Lock()
		delete(m.subs, ch)
		m.mu.Unlock()
	}
}

func (m *Membership) notify() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for ch := range m.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// hold keeps the current registration after Start's context ends, until
// the returned function is called (once; later calls do nothing).
func (m *Membership) hold() func() {
	m.mu.Lock()
	m.holds++
	m.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			m.mu.Lock()
			m.holds--
			m.mu.Unlock()
			select {
			case m.released <- struct{}{}:
			default:
			}
		})
	}
}

func (m *Membership) held() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.holds > 0
}

// Alive reports whether the Member name with uid (any uid if empty)
// exists: from the cache when it is there, else from the store (the cache
// may lag behind a member that just registered).
func (m *Membership) Alive(ctx context.Context, name, uid string) (bool, error) {
	key := meta.Key{Namespace: m.cfg.Namespace, Name: name}
	if o, ok := m.informer.Get(key); ok && (uid == "" || o.GetObjectMeta().UID == uid) {
		return true, nil
	}
	cur := &Member{}
	if err := m.cfg.Store.Get(ctx, key, cur); err != nil {
		if errs.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	return uid == "" || cur.UID == uid, nil
}

// Informer returns the Member informer (for observers built on it).
func (m *Membership) Informer() *source.Informer { return m.informer }

// Start registers, renews and reaps until ctx ends and the work held on
// the registration has let go, then deletes this process's Member. A
// Membership starts once.
func (m *Membership) Start(ctx context.Context) error {
	m.mu.Lock()
	if m.started {
		m.mu.Unlock()
		return errs.New(errs.FailedPrecondition, "membership %s already started", m.cfg.Group)
	}
	m.started = true
	m.mu.Unlock()
	defer close(m.stopped)

	// The informer outlives ctx while held work drains.
	infCtx, stopInformer := context.WithCancel(context.WithoutCancel(ctx))
	infDone := make(chan struct{})
	go func() { defer close(infDone); _ = m.informer.Run(infCtx) }()
	defer func() { stopInformer(); <-infDone }()

	for ctx.Err() == nil {
		start := time.Now()
		s, mem, err := m.register(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			m.cfg.Logger.Error(err, "could not register member; retrying")
			if !sleepFor(ctx, m.cfg.RenewInterval) {
				break
			}
			continue
		}
		if !m.waitSeen(ctx, s) {
			m.end(s, nil)
			m.deregister(mem)
			break
		}
		m.mu.Lock()
		select {
		case <-m.ready:
		default:
			close(m.ready)
		}
		m.mu.Unlock()
		lostErr := m.serve(ctx, s, mem, start)
		m.end(s, lostErr)
		if lostErr == nil {
			m.deregister(mem)
			return nil
		}
		m.deregister(mem) // in case it still exists (renewals failed)
		m.cfg.Logger.Error(lostErr, "member lost", "member", mem.Name)
	}
	return nil
}

func (m *Membership) register(ctx context.Context) (*Session, *Member, error) {
	host, _ := os.Hostname()
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	mem := &Member{
		ObjectMeta: meta.ObjectMeta{Namespace: m.cfg.Namespace, Name: m.cfg.Group + "-" + hex.EncodeToString(b)},
		Spec: MemberSpec{Group: m.cfg.Group, Hostname: host, PID: os.Getpid(),
			LeaseDurationMillis: millis(m.cfg.LeaseDuration), RenewTime: meta.Now()},
	}
	if err := m.cfg.Store.Create(ctx, mem); err != nil {
		return nil, nil, err
	}
	s := &Session{Name: mem.Name, UID: mem.UID, done: make(chan struct{}), deleted: make(chan struct{}), seen: make(chan struct{})}
	m.mu.Lock()
	m.session = s
	close(m.sessions)
	m.sessions = make(chan struct{})
	m.mu.Unlock()
	m.cfg.Logger.Info("registered member", "member", mem.Name)
	return s, mem, nil
}

// waitSeen waits until the member cache has synced and holds s's Member,
// so that Live includes this process once it is ready. It reports false
// if ctx ended first. After a lease duration it stops waiting: a Member
// the cache never showed is gone, which serve finds out.
func (m *Membership) waitSeen(ctx context.Context, s *Session) bool {
	if !m.informer.WaitForSync(ctx) {
		return false
	}
	if o, ok := m.informer.Get(meta.Key{Namespace: m.cfg.Namespace, Name: s.Name}); ok && s.is(o) {
		return true
	}
	t := time.NewTimer(m.cfg.LeaseDuration)
	defer t.Stop()
	select {
	case <-s.seen:
	case <-s.deleted:
	case <-t.C:
	case <-ctx.Done():
		return false
	}
	return true
}

func (m *Membership) end(s *Session, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s.err = err
	close(s.done)
}

// serve renews mem and reaps expired members until ctx ends and no work
// holds the registration (nil), or the session is lost (an error): mem
// was found deleted, or no renewal succeeded in time. renewed is when
// the last successful write of mem started.
func (m *Membership) serve(ctx context.Context, s *Session, mem *Member, renewed time.Time) error {
	// Renewals go on while held work drains after ctx ended.
	wctx := context.WithoutCancel(ctx)
	// The others may delete mem LeaseDuration after they saw its last
	// version, which they cannot have seen before the write started; the
	// session ends half a renew interval earlier.
	validFor := m.cfg.LeaseDuration - m.cfg.RenewInterval/2
	renew := time.NewTimer(m.cfg.RenewInterval)
	defer renew.Stop()
	reap := time.NewTicker(m.cfg.RenewInterval / 2)
	defer reap.Stop()
	stopping, deleted := ctx.Done(), s.deleted
	for {
		select {
		case <-stopping:
			stopping = nil
			if !m.held() {
				return nil
			}
			m.cfg.Logger.Info("stopping once held work has let go", "member", mem.Name)
		case <-m.released:
			if ctx.Err() != nil && !m.held() {
				return nil
			}
		case <-deleted:
			deleted = nil
			if gone, err := m.gone(wctx, mem); gone {
				return err
			}
		case <-reap.C:
			if ctx.Err() == nil {
				m.reap(ctx, mem.Name)
			}
		case <-renew.C:
			deadline := renewed.Add(validFor)
			if !time.Now().Before(deadline) {
				return errs.New(errs.Aborted, "member %s was not renewed within %v", mem.Name, validFor)
			}
			next := meta.DeepCopy(mem)
			next.Spec.RenewTime = meta.Now()
			next.Spec.Renewals++
			start := time.Now()
			rctx, cancel := context.WithDeadline(wctx, deadline)
			err := m.cfg.Store.Update(rctx, next)
			cancel()
			switch {
			case err == nil:
				mem, renewed = next, start
				renew.Reset(m.cfg.RenewInterval)
				continue
			case errs.IsNotFound(err):
				return errs.New(errs.Aborted, "member %s was deleted by another process (it missed its renewals)", mem.Name)
			case errs.IsConflict(err):
				// Someone else wrote it; the uid tells whether it is ours.
				if gone, gerr := m.gone(wctx, mem); gone {
					return gerr
				}
				if cur := m.fetch(wctx, mem); cur != nil {
					mem = cur
				}
			default:
				m.cfg.Logger.Error(err, "member renewal failed; will retry", "member", mem.Name)
			}
			renew.Reset(max(m.cfg.RenewInterval/4, time.Millisecond))
		}
	}
}

// gone reports whether mem no longer exists (another incarnation under
// its name counts as gone), with the error that ends its session.
func (m *Membership) gone(ctx context.Context, mem *Member) (bool, error) {
	cur := &Member{}
	err := m.cfg.Store.Get(ctx, mem.Key(), cur)
	switch {
	case errs.IsNotFound(err):
		return true, errs.New(errs.Aborted, "member %s was deleted by another process (it missed its renewals)", mem.Name)
	case err == nil && cur.UID != mem.UID:
		return true, errs.New(errs.Aborted, "member %s was replaced", mem.Name)
	}
	return false, nil
}

// fetch reads mem's current version (nil on error or another uid).
func (m *Membership) fetch(ctx context.Context, mem *Member) *Member {
	cur := &Member{}
	if err := m.cfg.Store.Get(ctx, mem.Key(), cur); err != nil || cur.UID != mem.UID {
		return nil
	}
	return cur
}

// reap deletes members of the group that have not changed for their lease
// duration on this process's clock.
func (m *Membership) reap(ctx context.Context, self string) {
	objs := m.informer.List(m.cfg.Namespace, nil)
	live := 0
	for _, o := range objs {
		mem := o.(*Member)
		if mem.Spec.Group != m.cfg.Group {
			continue
		}
		live++
		if mem.Name == self {
			continue
		}
		if m.clock.expiresIn(mem, fromMillis(mem.Spec.LeaseDurationMillis)) > 0 {
			continue
		}
		victim := &Member{ObjectMeta: meta.ObjectMeta{Namespace: mem.Namespace, Name: mem.Name}}
		err := m.cfg.Store.Delete(ctx, victim, store.WithPreconditions(store.Preconditions{UID: mem.UID, ResourceVersion: mem.ResourceVersion}))
		switch {
		case err == nil:
			m.cfg.Logger.Info("deleted expired member", "member", mem.Name)
			live--
		case errs.IsNotFound(err), errs.IsConflict(err):
			// Gone already, or renewed meanwhile.
		default:
			m.cfg.Logger.Error(err, "could not delete expired member", "member", mem.Name)
		}
	}
	m.cfg.Metrics.setMembers(live)
}

func (m *Membership) deregister(mem *Member) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	victim := &Member{ObjectMeta: meta.ObjectMeta{Namespace: mem.Namespace, Name: mem.Name}}
	if err := m.cfg.Store.Delete(ctx, victim, store.WithPreconditions(store.Preconditions{UID: mem.UID})); err != nil && !errs.IsNotFound(err) && !errs.IsConflict(err) {
		m.cfg.Logger.Error(err, "could not delete own member", "member", mem.Name)
	}
}
