package coordination

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"sync"

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
	if cfg.Logger.GetSink() == nil {
		cfg.Logger = logr.Discard()
	}
	p := &Providers{cfg: cfg, observers: map[string]map[*observer]struct{}{}, regs: map[*Registration]struct{}{}}
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
// stop.
func (p *Providers) Start(ctx context.Context) error {
	changes := p.cfg.Membership.Changes()
	go func() {
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
	p.mu.Lock()
	regs := make([]*Registration, 0, len(p.regs))
	for r := range p.regs {
		regs = append(regs, r)
	}
	p.mu.Unlock()
	for _, r := range regs {
		_ = r.Unregister(context.Background())
	}
	return err
}

// Register makes this process a provider of key (with free-form data)
// until Unregister, the end of its membership session (it re-registers
// under the next one), or Start's end.
func (p *Providers) Register(ctx context.Context, key string, data map[string]string) (*Registration, error) {
	if key == "" {
		return nil, errs.Invalid("key", "provider key is required")
	}
	r := &Registration{p: p, key: key, data: data}
	if err := r.ensure(ctx); err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.regs[r] = struct{}{}
	p.mu.Unlock()
	return r, nil
}

func keyHash(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])[:16]
}

// ensure creates the Provider object for the current session if missing.
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

// Unregister removes this provider registration.
func (r *Registration) Unregister(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return nil
	}
	r.done = true
	r.p.mu.Lock()
	delete(r.p.regs, r)
	r.p.mu.Unlock()
	if r.obj == nil {
		return nil
	}
	victim := &Provider{ObjectMeta: meta.ObjectMeta{Namespace: r.obj.Namespace, Name: r.obj.Name}}
	if err := r.p.cfg.Store.Delete(ctx, victim); err != nil && !errs.IsNotFound(err) {
		return err
	}
	return nil
}

// Observe calls onAvailable when key gets its first live provider (with
// the live providers) and onUnavailable when it loses its last. If key has
// providers when Observe is called (after the cache synced), onAvailable
// is called at once. Each transition is reported exactly once, in order;
// calls are serialized and must not call back into Providers. The
// returned function stops observing.
func (p *Providers) Observe(ctx context.Context, key string, onAvailable func([]ProviderSpec), onUnavailable func()) (func(), error) {
	if !p.informer.WaitForSync(ctx) {
		return nil, errs.Wrap(errs.CodeOf(ctx.Err()), ctx.Err(), "waiting for the provider cache")
	}
	o := &observer{onAvailable: onAvailable, onUnavailable: onUnavailable}
	p.mu.Lock()
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
		out = append(out, pr.Spec)
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
