package coordination

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/store"
)

// providerProcess is a process with a membership and Providers.
type providerProcess struct {
	*process
	providers *Providers
	stopP     func() error
}

func newProviderProcess(t testing.TB, st store.Store) *providerProcess {
	t.Helper()
	p := newMembership(t, st, defaultGroup)
	pr, err := NewProviders(ProvidersConfig{Store: st, Membership: p.m})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, pr)
	return &providerProcess{process: p, providers: pr, stopP: stop}
}

// stopAll stops the process: its Providers, then its membership.
func (p *providerProcess) stopAll(t testing.TB) {
	t.Helper()
	if err := p.stopP(); err != nil {
		t.Fatal(err)
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
}

// observations records an observer's calls.
type observations struct {
	mu     sync.Mutex
	events []string
}

func (o *observations) available(ps []ProviderSpec) {
	var members []string
	for _, p := range ps {
		members = append(members, p.Member)
	}
	o.mu.Lock()
	o.events = append(o.events, fmt.Sprintf("available(%d)", len(members)))
	o.mu.Unlock()
}

func (o *observations) unavailable() {
	o.mu.Lock()
	o.events = append(o.events, "unavailable")
	o.mu.Unlock()
}

func (o *observations) get() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.events...)
}

func (o *observations) want(t testing.TB, what string, want ...string) {
	t.Helper()
	eventually(t, what, func() (bool, string) {
		got := o.get()
		return slices.Equal(got, want), fmt.Sprint(got)
	})
}

func observe(t testing.TB, p *providerProcess, key string) *observations {
	t.Helper()
	o := &observations{}
	stop, err := p.providers.Observe(context.Background(), key, o.available, o.unavailable)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return o
}

// liveCount waits until p's cache shows n live providers of key.
func liveCount(t testing.TB, p *providerProcess, key string, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d live providers of %s", n, key), func() (bool, string) {
		got := p.providers.Live(key)
		return len(got) == n, fmt.Sprint(got)
	})
}

func TestProvidersFirstAndLast(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	obs := newProviderProcess(t, st)
	p1, p2 := newProviderProcess(t, st), newProviderProcess(t, st)
	ctx := context.Background()
	o := observe(t, obs, "db")
	other := observe(t, obs, "cache")
	if got := o.get(); len(got) != 0 {
		t.Fatalf("events before any provider: %v", got)
	}

	r1, err := p1.providers.Register(ctx, "db", map[string]string{"addr": "10.0.0.1:5432"})
	if err != nil {
		t.Fatal(err)
	}
	o.want(t, "available on the first provider", "available(1)")
	live := obs.providers.Live("db")
	if len(live) != 1 || live[0].Member != p1.m.Session().Name || live[0].Data["addr"] != "10.0.0.1:5432" || live[0].Key != "db" {
		t.Fatalf("Live = %+v", live)
	}
	live[0].Data["addr"] = "scribbled" // a copy: the cache is untouched
	if obs.providers.Live("db")[0].Data["addr"] != "10.0.0.1:5432" {
		t.Fatal("Live returned the cache's own map")
	}

	r2, err := p2.providers.Register(ctx, "db", nil)
	if err != nil {
		t.Fatal(err)
	}
	liveCount(t, obs, "db", 2)
	if err := r1.Unregister(ctx); err != nil {
		t.Fatal(err)
	}
	liveCount(t, obs, "db", 1)
	if got := o.get(); !slices.Equal(got, []string{"available(1)"}) {
		t.Fatalf("intermediate changes were reported: %v", got)
	}
	if err := r2.Unregister(ctx); err != nil {
		t.Fatal(err)
	}
	o.want(t, "unavailable on the last provider", "available(1)", "unavailable")
	if err := r2.Unregister(ctx); err != nil {
		t.Fatalf("second Unregister = %v", err)
	}

	// And again: a new first provider is reported once more.
	r3, err := p2.providers.Register(ctx, "db", nil)
	if err != nil {
		t.Fatal(err)
	}
	o.want(t, "available again", "available(1)", "unavailable", "available(1)")
	if got := other.get(); len(got) != 0 {
		t.Fatalf("another key's observer saw %v", got)
	}
	if err := r3.Unregister(ctx); err != nil {
		t.Fatal(err)
	}
	o.want(t, "unavailable again", "available(1)", "unavailable", "available(1)", "unavailable")
}

func TestProvidersObserveExisting(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	p1 := newProviderProcess(t, st)
	if _, err := p1.providers.Register(context.Background(), "queue", nil); err != nil {
		t.Fatal(err)
	}
	obs := newProviderProcess(t, st)
	o := observe(t, obs, "queue")
	// Observe reports existing providers before it returns.
	if got := o.get(); !slices.Equal(got, []string{"available(1)"}) {
		t.Fatalf("events right after Observe = %v, want available(1)", got)
	}
}

// A provider whose process stalls is reaped with its Member: the key goes
// unavailable; when the process wakes up it registers anew and the key is
// available again.
func TestProvidersMemberReaped(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	obs := newProviderProcess(t, st)
	g := newGate(st, "provider")
	pm := newMembership(t, g, defaultGroup)
	pp, err := NewProviders(ProvidersConfig{Store: g, Membership: pm.m})
	if err != nil {
		t.Fatal(err)
	}
	run(t, pp)
	o := observe(t, obs, "search")
	if _, err := pp.Register(context.Background(), "search", nil); err != nil {
		t.Fatal(err)
	}
	o.want(t, "available", "available(1)")
	old := pm.m.Session().Name

	g.Pause()
	o.want(t, "unavailable once the member is reaped", "available(1)", "unavailable")
	if getMember(t, st, old) != nil {
		t.Fatal("unavailable while the provider's member still exists")
	}
	g.Resume()
	o.want(t, "available after re-registration", "available(1)", "unavailable", "available(1)")
	live := obs.providers.Live("search")
	if len(live) != 1 || live[0].Member == old {
		t.Fatalf("Live = %+v, want the new member", live)
	}
	// The old session's Provider object is cleaned up by the process.
	eventually(t, "one Provider object", func() (bool, string) {
		res, err := st.List(context.Background(), KindProvider, store.ListOptions{Namespace: testNS})
		if err != nil {
			return false, err.Error()
		}
		return len(res.Items) == 1, fmt.Sprint(len(res.Items))
	})
}

// Restarting the observing process reports the current state once, and
// the stopped observer gets nothing more; restarting the providing
// process is one unavailable and one available.
func TestProvidersRestarts(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	prov := newProviderProcess(t, st)
	if _, err := prov.providers.Register(context.Background(), "api", nil); err != nil {
		t.Fatal(err)
	}
	obs1 := newProviderProcess(t, st)
	o1 := observe(t, obs1, "api")
	o1.want(t, "first observer", "available(1)")
	obs1.stopAll(t)

	obs2 := newProviderProcess(t, st)
	o2 := observe(t, obs2, "api")
	o2.want(t, "second observer", "available(1)")

	prov.stopAll(t) // unregisters on stop
	o2.want(t, "provider stopped", "available(1)", "unavailable")
	prov2 := newProviderProcess(t, st)
	if _, err := prov2.providers.Register(context.Background(), "api", nil); err != nil {
		t.Fatal(err)
	}
	o2.want(t, "provider restarted", "available(1)", "unavailable", "available(1)")
	if got := o1.get(); !slices.Equal(got, []string{"available(1)"}) {
		t.Fatalf("the stopped observer was called: %v", got)
	}
	if _, err := obs1.providers.Observe(context.Background(), "api", nil, nil); !errs.IsFailedPrecondition(err) {
		t.Fatalf("Observe on stopped Providers = %v", err)
	}
	if _, err := obs1.providers.Register(context.Background(), "api", nil); !errs.IsFailedPrecondition(err) {
		t.Fatalf("Register on stopped Providers = %v", err)
	}
}

func TestProvidersBadInput(t *testing.T) {
	checkLeaks(t)
	st := newStore(t)
	p := newProviderProcess(t, st)
	ctx := context.Background()
	if _, err := p.providers.Register(ctx, "", nil); !errs.IsInvalidArgument(err) || errs.FieldOf(err) != "key" {
		t.Fatalf("Register(\"\") = %v", err)
	}
	if _, err := p.providers.Observe(ctx, "", nil, nil); !errs.IsInvalidArgument(err) {
		t.Fatalf("Observe(\"\") = %v", err)
	}
	r, err := p.providers.Register(ctx, "dup", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.providers.Register(ctx, "dup", nil); !errs.IsAlreadyExists(err) {
		t.Fatalf("second Register of a key = %v, want AlreadyExists", err)
	}
	if err := r.Unregister(ctx); err != nil {
		t.Fatal(err)
	}
	r2, err := p.providers.Register(ctx, "dup", nil)
	if err != nil {
		t.Fatalf("Register after Unregister = %v", err)
	}
	// Odd keys are fine: they are hashed into names and labels.
	odd := strings.Repeat("ünïcode/key with spaces ", 20)
	if _, err := p.providers.Register(ctx, odd, nil); err != nil {
		t.Fatalf("Register(odd key) = %v", err)
	}
	liveCount(t, p, odd, 1)
	if err := r2.Unregister(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := NewProviders(ProvidersConfig{Store: st}); !errs.IsInvalidArgument(err) {
		t.Fatalf("NewProviders without membership = %v", err)
	}
}
