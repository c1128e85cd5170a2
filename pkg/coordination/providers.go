package coordination

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
	"github.com/capstanhq/capstan/pkg/store"
)

// providerKeyLabel carries a hash of a Provider's key, for selection.
const providerKeyLabel = "capstan.io/provider-key"

// ProvidersConfig configures Providers.
type ProvidersConfig struct {
	// Store holds the Providers.
	Store store.Store
	// Membership is this process's membership; registrations belong to
	// its session and disappear with it.
	Membership *Membership
	// Namespace the Providers live in (default: the membership's).
	Namespace string
	// Logger receives registration errors.
	Logger logr.Logger
}

// Providers registers this process as a provider of service keys and tells
// observers when a key gains its first live provider and loses its last.
// It is a manager runnable on every replica.
type Providers struct {
	cfg      ProvidersConfig
	informer *source.Informer

	mu        sync.Mutex
	observers map[string]map[*observer]struct{}
	regs      map[*Registration]struct{}
	keys      map[string]*Registration
	stopped   bool
}

type observer struct {
	onAvailable   func(providers []ProviderSpec)
	onUnavailable func()
	available     bool
}

// Registration is one key this process provides.
type Registration struct {
	p    *Providers
	key  string
	data map[string]string
	mu   sync.Mutex
	obj  *Provider
	done bool
}

// NewProviders validates cfg and returns Providers; Start runs it.
func NewProviders(cfg ProvidersConfig) (*Providers, error) {
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
	if err := requireKind(cfg.Store, KindProvider); err != nil {
		return nil, err
	}
	if cfg.Logger.GetSink() == nil {
		cfg.Logger = logr.Discard()
	}
	p := &Providers{cfg: cfg, observers: map[string]map[*observer]struct{}{}, regs: map[*Registration]struct{}{}, keys: map[string]*Registration{}}
	p.informer = source.NewInformer(cfg.Store, KindProvider, source.InformerOptions{Namespace: cfg.Namespace, Logger: cfg.Logger})
	recompute := func(objs ...meta.Object) {
		keys := map[string]bool{}
		for _, o := range objs {
			keys[o.(*Provider).Spec.Key] = true
		}
		p.recompute(keys)
	}
	p.informer.AddEventHandler(source.HandlerFuncs{
		AddFunc:    func(o meta.Object, _ bool) { recompute(o) },
		UpdateFunc: func(o, n meta.Object) { recompute(o, n) },
		DeleteFunc: func(o meta.Object) { recompute(o) },
	})
	return p, nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (p *Providers) NeedLeaderElection() bool { return false }

// Start runs the Provider cache until ctx ends, re-registers this
// process's keys under each new membership session, and deletes them on
// stop. Observers get no calls after Start returned.
func (p *Providers) Start(ctx context.Context) error {
	changes, unsubscribe := p.cfg.Membership.subscribe()
	defer unsubscribe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-changes:
				p.recompute(nil) // a provider's member may have died
				p.reregister(ctx)
			}
		}
	}()
	err := p.informer.Run(ctx)
	<-done
	p.mu.Lock()
	p.stopped = true
	regs := make([]*Registration, 0, len(p.regs))
	for r := range p.regs {
		regs = append(regs, r)
	}
	p.mu.Unlock()
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for _, r := range regs {
		if err := r.Unregister(uctx); err != nil {
			p.cfg.Logger.Error(err, "could not unregister provider on stop", "key", r.key)
		}
	}
	return err
}

// Register makes this process a provider of key (with free-form data)
// until Unregister, the end of its membership session (it re-registers
// under the next one), or Start's end. A key is registered once per
// Providers: a second registration is errs.AlreadyExists.
func (p *Providers) Register(ctx context.Context, key string, data map[string]string) (*Registration, error) {
	if key == "" {
		return nil, errs.Invalid("key", "provider key is required")
	}
	r := &Registration{p: p, key: key, data: maps.Clone(data)}
	p.mu.Lock()
	switch {
	case p.stopped:
		p.mu.Unlock()
		return nil, errs.New(errs.FailedPrecondition, "providers have stopped")
	case p.keys[key] != nil:
		p.mu.Unlock()
		return nil, errs.New(errs.AlreadyExists, "this process already provides %q", key)
	}
	p.keys[key] = r
	p.regs[r] = struct{}{}
	p.mu.Unlock()
	if err := r.ensure(ctx); err != nil {
		_ = r.Unregister(context.WithoutCancel(ctx))
		return nil, err
	}
	return r, nil
}

func keyHash(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])[:16]
}

// ensure creates the Provider object for the current session if missing,
// and deletes the one of an earlier session.
func (r *Registration) ensure(ctx context.Context) error {
	s, err := r.p.cfg.Membership.WaitSession(ctx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done || (r.obj != nil && r.obj.Spec.Member == s.Name) {
		return nil
	}
	if r.obj != nil {
		if err := r.delete(ctx); err != nil {
			return err
		}
		r.obj = nil
	}
	obj := &Provider{
		ObjectMeta: meta.ObjectMeta{Namespace: r.p.cfg.Namespace, Name: s.Name + "-" + keyHash(r.key),
			Labels:          map[string]string{providerKeyLabel: keyHash(r.key)},
			OwnerReferences: []meta.OwnerReference{s.OwnerReference()}},
		Spec: ProviderSpec{Key: r.key, Member: s.Name, Data: r.data},
	}
	if err := r.p.cfg.Store.Create(ctx, obj); err != nil && !errs.IsAlreadyExists(err) {
		return err
	}
	r.obj = obj
	return nil
}

// delete deletes the registration's object; the caller holds r.mu.
func (r *Registration) delete(ctx context.Context) error {
	victim := &Provider{ObjectMeta: meta.ObjectMeta{Namespace: r.obj.Namespace, Name: r.obj.Name}}
	var opts []store.DeleteOption
	if r.obj.UID != "" {
		opts = append(opts, store.WithPreconditions(store.Preconditions{UID: r.obj.UID}))
	}
	if err := r.p.cfg.Store.Delete(ctx, victim, opts...); err != nil && !errs.IsNotFound(err) && !errs.IsConflict(err) {
		return err
	}
	return nil
}

func (p *Providers) reregister(ctx context.Context) {
	p.mu.Lock()
	regs := make([]*Registration, 0, len(p.regs))
	for r := range p.regs {
		regs = append(regs, r)
	}
	p.mu.Unlock()
	for _, r := range regs {
		if err := r.ensure(ctx); err != nil && ctx.Err() == nil {
			p.cfg.Logger.Error(err, "could not re-register provider", "key", r.key)
		}
	}
}

// Unregister removes this provider registration. Unregistering twice is
// a no-op.
func (r *Registration) Unregister(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return nil
	}
	if r.obj != nil {
		if err := r.delete(ctx); err != nil {
			return err // transient: the caller may retry
		}
		r.obj = nil
	}
	r.done = true
	r.p.mu.Lock()
	delete(r.p.regs, r)
	if r.p.keys[r.key] == r {
		delete(r.p.keys, r.key)
	}
	r.p.mu.Unlock()
	return nil
}

// Observe calls onAvailable when key gets its first live provider (with
// the live providers) and onUnavailable when it loses its last. If key has
// providers when Observe is called (after the cache synced), onAvailable
// is called at once. Each transition is reported exactly once, in order;
// calls are serialized and must not call back into Providers. The
// returned function stops observing.
func (p *Providers) Observe(ctx context.Context, key string, onAvailable func([]ProviderSpec), onUnavailable func()) (func(), error) {
	if key == "" {
		return nil, errs.Invalid("key", "provider key is required")
	}
	// Liveness comes from the member cache: both must have synced for an
	// existing provider to be reported at once.
	if !p.informer.WaitForSync(ctx) || !p.cfg.Membership.Informer().WaitForSync(ctx) {
		return nil, errs.Wrap(errs.CodeOf(ctx.Err()), ctx.Err(), "waiting for the provider and member caches")
	}
	o := &observer{onAvailable: onAvailable, onUnavailable: onUnavailable}
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return nil, errs.New(errs.FailedPrecondition, "providers have stopped")
	}
	if p.observers[key] == nil {
		p.observers[key] = map[*observer]struct{}{}
	}
	p.observers[key][o] = struct{}{}
	p.evaluate(key, o)
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		delete(p.observers[key], o)
		p.mu.Unlock()
	}, nil
}

// Live returns the live providers of key.
func (p *Providers) Live(key string) []ProviderSpec {
	var out []ProviderSpec
	for _, o := range p.informer.List(p.cfg.Namespace, nil) {
		pr := o.(*Provider)
		if pr.Spec.Key != key || pr.DeletionTimestamp != nil {
			continue
		}
		if !p.memberLive(pr) {
			continue
		}
		spec := pr.Spec
		spec.Data = maps.Clone(spec.Data)
		out = append(out, spec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Member < out[j].Member })
	return out
}

func (p *Providers) memberLive(pr *Provider) bool {
	var ref *meta.OwnerReference
	for i := range pr.OwnerReferences {
		if pr.OwnerReferences[i].Kind == KindMember {
			ref = &pr.OwnerReferences[i]
		}
	}
	if ref == nil {
		return true
	}
	o, ok := p.cfg.Membership.Informer().Get(meta.Key{Namespace: p.cfg.Membership.cfg.Namespace, Name: ref.Name})
	return ok && o.GetObjectMeta().UID == ref.UID
}

// recompute re-evaluates the observers of keys (all keys if nil).
func (p *Providers) recompute(keys map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	for key, obs := range p.observers {
		if keys != nil && !keys[key] {
			continue
		}
		for o := range obs {
			p.evaluate(key, o)
		}
	}
}

// evaluate reports o's transition for key, if any; the caller holds mu.
func (p *Providers) evaluate(key string, o *observer) {
	live := p.Live(key)
	switch {
	case len(live) > 0 && !o.available:
		o.available = true
		if o.onAvailable != nil {
			o.onAvailable(live)
		}
	case len(live) == 0 && o.available:
		o.available = false
		if o.onUnavailable != nil {
			o.onUnavailable()
		}
	}
}
