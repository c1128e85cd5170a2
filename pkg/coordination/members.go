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
	// LeaseDuration.
	RenewInterval time.Duration
	// Logger receives membership changes.
	Logger logr.Logger
	// Metrics, if set, records the number of live members.
	Metrics *Metrics
}

// Session is one registration of this process: a Member that exists from
// registration until the process stops or finds it deleted. Work tied to a
// session (locks, leases, shards) stops when Done closes.
type Session struct {
	// Name and UID identify the Member.
	Name, UID string
	done      chan struct{}
	err       error
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

// Membership registers this process as a Member, renews it, watches the
// others and deletes the expired ones. It is a manager runnable that runs
// on every replica.
type Membership struct {
	cfg      MembershipConfig
	informer *source.Informer
	clock    *versionClock

	mu      sync.Mutex
	session *Session
	ready   chan struct{}
	subs    []chan struct{}
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
	if _, err := cfg.Store.Scheme().Kind(KindMember); err != nil {
		return nil, errs.Wrap(errs.FailedPrecondition, err, "the store's scheme lacks the coordination kinds (coordination.AddToScheme)")
	}
	if cfg.LeaseDuration <= 0 {
		cfg.LeaseDuration = DefaultMemberLeaseDuration
	}
	if cfg.RenewInterval <= 0 {
		cfg.RenewInterval = cfg.LeaseDuration / 3
	}
	if cfg.RenewInterval >= cfg.LeaseDuration {
		return nil, errs.Invalid("renewInterval", "renew interval %v must be less than the lease duration %v", cfg.RenewInterval, cfg.LeaseDuration)
	}
	if cfg.Logger.GetSink() == nil {
		cfg.Logger = logr.Discard()
	}
	m := &Membership{cfg: cfg, clock: newVersionClock(), ready: make(chan struct{})}
	m.informer = source.NewInformer(cfg.Store, KindMember, source.InformerOptions{Namespace: cfg.Namespace, Logger: cfg.Logger})
	m.informer.AddEventHandler(source.HandlerFuncs{
		AddFunc:    func(meta.Object, bool) { m.notify() },
		UpdateFunc: func(o, n meta.Object) {},
		DeleteFunc: func(meta.Object) { m.notify() },
	})
	return m, nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: membership
// runs on every replica.
func (m *Membership) NeedLeaderElection() bool { return false }

// Ready is closed once this process is registered and has seen the other
// members.
func (m *Membership) Ready() <-chan struct{} { return m.ready }

// Session returns the current session (nil before registration).
func (m *Membership) Session() *Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.session
}

// WaitSession waits for a live session.
func (m *Membership) WaitSession(ctx context.Context) (*Session, error) {
	for {
		select {
		case <-m.ready:
		case <-ctx.Done():
			return nil, errs.Wrap(errs.CodeOf(ctx.Err()), ctx.Err(), "waiting for membership")
		}
		if s := m.Session(); s != nil && s.Err() == nil {
			select {
			case <-s.done:
			default:
				return s, nil
			}
		}
		if !sleepFor(ctx, 10*time.Millisecond) {
			return nil, errs.Wrap(errs.CodeOf(ctx.Err()), ctx.Err(), "waiting for membership")
		}
	}
}

// Live returns the names of the members this process sees (itself
// included), sorted.
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
// joins or leaves.
func (m *Membership) Changes() <-chan struct{} {
	ch := make(chan struct{}, 1)
	m.mu.Lock()
	m.subs = append(m.subs, ch)
	m.mu.Unlock()
	return ch
}

func (m *Membership) notify() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ch := range m.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Alive reports whether the Member name with uid (any uid if empty)
// exists: from the cache
// when it is there, else from the store (the cache may lag behind a member
// that just registered).
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

// Start registers, renews and reaps until ctx ends, then deletes this
// process's Member.
func (m *Membership) Start(ctx context.Context) error {
	infDone := make(chan struct{})
	go func() { defer close(infDone); _ = m.informer.Run(ctx) }()
	defer func() { <-infDone }()

	var readyOnce sync.Once
	for ctx.Err() == nil {
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
		if !m.informer.WaitForSync(ctx) {
			m.end(s, nil)
			break
		}
		readyOnce.Do(func() { close(m.ready) })
		lostErr := m.serve(ctx, mem)
		m.end(s, lostErr)
		if lostErr == nil {
			m.deregister(mem)
			return nil
		}
		m.cfg.Logger.Error(lostErr, "member lost; registering anew", "member", mem.Name)
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
	s := &Session{Name: mem.Name, UID: mem.UID, done: make(chan struct{})}
	m.mu.Lock()
	m.session = s
	m.mu.Unlock()
	m.cfg.Logger.Info("registered member", "member", mem.Name)
	return s, mem, nil
}

func (m *Membership) end(s *Session, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s.err = err
	close(s.done)
}

// serve renews mem and reaps expired members until ctx ends (nil) or mem
// is found deleted (an error).
func (m *Membership) serve(ctx context.Context, mem *Member) error {
	t := time.NewTicker(m.cfg.RenewInterval)
	defer t.Stop()
	reap := time.NewTicker(m.cfg.RenewInterval / 2)
	defer reap.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reap.C:
			m.reap(ctx, mem.Name)
		case <-t.C:
			next := meta.DeepCopy(mem)
			next.Spec.RenewTime = meta.Now()
			next.Spec.Renewals++
			rctx, cancel := context.WithTimeout(ctx, m.cfg.LeaseDuration-m.cfg.RenewInterval)
			err := m.cfg.Store.Update(rctx, next)
			cancel()
			switch {
			case err == nil:
				mem = next
			case ctx.Err() != nil:
				return nil
			case errs.IsNotFound(err):
				return errs.New(errs.Aborted, "member %s was deleted by another process (it missed its renewals)", mem.Name)
			case errs.IsConflict(err):
				// Someone else wrote it; the uid tells whether it is ours.
				cur := &Member{}
				if gerr := m.cfg.Store.Get(ctx, mem.Key(), cur); gerr != nil || cur.UID != mem.UID {
					return errs.New(errs.Aborted, "member %s was replaced", mem.Name)
				}
				mem = cur
			default:
				m.cfg.Logger.Error(err, "member renewal failed; will retry", "member", mem.Name)
			}
		}
	}
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
			m.clock.forget(mem.Key())
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
	if err := m.cfg.Store.Delete(ctx, victim, store.WithPreconditions(store.Preconditions{UID: mem.UID})); err != nil && !errs.IsNotFound(err) {
		m.cfg.Logger.Error(err, "could not delete own member on stop", "member", mem.Name)
	}
}
