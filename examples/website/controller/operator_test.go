package controller_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	ctrl "github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/controller/controllerutil"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/memory"
	mongostore "github.com/capstanhq/capstan/pkg/store/mongo"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongotest"

	"github.com/capstanhq/capstan/examples/website/api"
	"github.com/capstanhq/capstan/examples/website/controller"
	"github.com/capstanhq/capstan/examples/website/dns"
)

// waitFor is how long a test waits for the operator to converge. It is
// generous: the embedded Mongo-wire server under -race delivers watch
// events in hundreds of milliseconds.
const waitFor = 60 * time.Second

// backend makes a fresh, empty store for one test.
type backend struct {
	name     string
	newStore func(t *testing.T, scheme *store.Scheme) store.Store
}

func memoryBackend() backend {
	return backend{name: "memory", newStore: func(t *testing.T, scheme *store.Scheme) store.Store {
		st := memory.New(scheme)
		t.Cleanup(func() { _ = st.Close(context.Background()) })
		return st
	}}
}

// mongoBackend stores in a database of its own on the shared test server,
// watching through the oplog as on the embedded server (auto-detected on a
// real MongoDB).
func mongoBackend() backend {
	return backend{name: "mongo", newStore: func(t *testing.T, scheme *store.Scheme) store.Store {
		db := mongotest.Database(t)
		st, err := mongostore.New(context.Background(), db.Client(), scheme, mongostore.Options{Database: db.Name()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close(context.Background()) })
		return st
	}}
}

// backends are the stores every operator test runs against.
func backends() []backend { return []backend{memoryBackend(), mongoBackend()} }

// recordingDNS is a DNS registry that notes, on every Remove, whether the
// Website was still in the store, marked for deletion: the finalizer must
// clean up before the Website may disappear.
type recordingDNS struct {
	dns.Memory
	st store.Store

	mu      sync.Mutex
	removes []string // "owner: state of the Website at the time"
}

func (r *recordingDNS) Remove(ctx context.Context, owner string) error {
	key, err := meta.ParseKey(owner)
	if err != nil {
		return err
	}
	site := &api.Website{}
	state := "gone"
	if err := r.st.Get(ctx, key, site); err == nil {
		state = "present"
		if site.IsBeingDeleted() {
			state = "being deleted"
		}
	}
	r.mu.Lock()
	r.removes = append(r.removes, owner+": "+state)
	r.mu.Unlock()
	return r.Memory.Remove(ctx, owner)
}

func (r *recordingDNS) removals() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.removes)
}

// env is a running operator: a store, a DNS registry and a manager with
// the garbage collector and the website controllers.
type env struct {
	st  store.Store
	dns *recordingDNS
}

func startOperator(t *testing.T, b backend, opts controller.Options) *env {
	t.Helper()
	scheme := store.NewScheme()
	if err := api.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	st := b.newStore(t, scheme)
	reg := &recordingDNS{st: st}
	opts.DNS = reg
	if opts.Controller.MaxConcurrentReconciles == 0 {
		opts.Controller.MaxConcurrentReconciles = 2
	}
	mgr, err := manager.New(manager.Options{Store: st, Logger: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := manager.AddGarbageCollector(mgr, ctrl.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := controller.SetupWithManager(mgr, opts); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	// Registered after the store's cleanup, so it runs before it: the
	// manager stops (and stops logging) before the test ends.
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("manager stopped with %v", err)
			}
		case <-time.After(waitFor):
			t.Errorf("manager did not stop within %v", waitFor)
		}
	})
	return &env{st: st, dns: reg}
}

// eventually polls check until it returns nil, failing the test with the
// last error after waitFor.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %v: %v", what, waitFor, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) create(t *testing.T, ns, name string, spec api.WebsiteSpec) *api.Website {
	t.Helper()
	site := &api.Website{ObjectMeta: meta.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
	if err := e.st.Create(context.Background(), site); err != nil {
		t.Fatalf("create Website %s/%s: %v", ns, name, err)
	}
	return site
}

// updateSpec changes a Website's spec the way a user would: read, modify,
// write, again on a conflict with the controller's writes.
func (e *env) updateSpec(t *testing.T, key meta.Key, mutate func(*api.WebsiteSpec)) *api.Website {
	t.Helper()
	site := &api.Website{ObjectMeta: meta.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	op, err := controllerutil.CreateOrUpdate(context.Background(), e.st, site, func() error {
		mutate(&site.Spec)
		return nil
	})
	if err != nil || op != controllerutil.OperationResultUpdated {
		t.Fatalf("update Website %s: %v, %v", key, op, err)
	}
	return site
}

func (e *env) website(key meta.Key) (*api.Website, error) {
	site := &api.Website{}
	return site, e.st.Get(context.Background(), key, site)
}

func (e *env) webServers(t *testing.T, ns string) []*api.WebServer {
	t.Helper()
	items, _, err := store.ListOf[api.WebServer](context.Background(), e.st, store.ListOptions{Namespace: ns})
	if err != nil {
		t.Fatalf("list WebServers: %v", err)
	}
	return items
}

// converged checks that the Website is served as its current spec says:
// status for the current generation, Ready, and exactly the WebServers it
// asks for, each controlled by it, with its spec, serving.
func (e *env) converged(t *testing.T, key meta.Key) error {
	site, err := e.website(key)
	if err != nil {
		return err
	}
	st, gen, want := site.Status, site.Generation, site.Spec.Replicas
	if st.ObservedGeneration != gen {
		return fmt.Errorf("status.observedGeneration %d, generation %d", st.ObservedGeneration, gen)
	}
	if st.Replicas != want || st.UpdatedReplicas != want || st.ReadyReplicas != want {
		return fmt.Errorf("status replicas %d/%d/%d (total/updated/ready), want %d", st.Replicas, st.UpdatedReplicas, st.ReadyReplicas, want)
	}
	if err := condition(st.Conditions, api.ConditionReady, meta.ConditionTrue, api.ReasonAllReplicasReady, gen); err != nil {
		return err
	}
	if err := condition(st.Conditions, api.ConditionProgressing, meta.ConditionFalse, api.ReasonComplete, gen); err != nil {
		return err
	}
	if want := "http://" + site.Spec.Domain + "/"; st.URL != want {
		return fmt.Errorf("status.url %q, want %q", st.URL, want)
	}
	var names []string
	for _, ws := range e.webServers(t, key.Namespace) {
		names = append(names, ws.Name)
		ref := ws.ControllerRef()
		if ref == nil || ref.Kind != api.WebsiteKind || ref.Name != site.Name || ref.UID != site.UID {
			return fmt.Errorf("WebServer %s has controller %+v, want Website %s uid %s", ws.Name, ref, site.Name, site.UID)
		}
		if ws.Labels[controller.WebsiteLabel] != site.Name {
			return fmt.Errorf("WebServer %s labels %v", ws.Name, ws.Labels)
		}
		if ws.Spec.Domain != site.Spec.Domain || ws.Spec.Content != site.Spec.Content {
			return fmt.Errorf("WebServer %s spec %+v, Website spec %+v", ws.Name, ws.Spec, site.Spec)
		}
		if !ws.IsServing() {
			return fmt.Errorf("WebServer %s not serving generation %d: %+v", ws.Name, ws.Generation, ws.Status)
		}
	}
	var wantNames []string
	for i := range int(want) {
		wantNames = append(wantNames, fmt.Sprintf("%s-%d", key.Name, i))
	}
	slices.Sort(wantNames)
	if !slices.Equal(names, wantNames) {
		return fmt.Errorf("WebServers %v, want %v", names, wantNames)
	}
	return nil
}

func condition(conds []meta.Condition, typ string, status meta.ConditionStatus, reason string, gen int64) error {
	c := meta.FindCondition(conds, typ)
	if c == nil {
		return fmt.Errorf("no %s condition in %+v", typ, conds)
	}
	if c.Status != status || c.Reason != reason || c.ObservedGeneration != gen {
		return fmt.Errorf("condition %s is %s/%s for generation %d, want %s/%s for %d (%s)",
			typ, c.Status, c.Reason, c.ObservedGeneration, status, reason, gen, c.Message)
	}
	if c.LastTransitionTime.IsZero() {
		return fmt.Errorf("condition %s has no lastTransitionTime", typ)
	}
	return nil
}

func (e *env) dnsRecords(t *testing.T) map[string]string {
	t.Helper()
	r, err := e.dns.Records(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestOperator(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Run("Lifecycle", func(t *testing.T) { testLifecycle(t, b) })
			t.Run("InvalidSpecAndDomainConflict", func(t *testing.T) { testInvalidAndConflict(t, b) })
			t.Run("StartupDelay", func(t *testing.T) { testStartupDelay(t, b) })
		})
	}
}

// testLifecycle walks one Website through create, scale up, content change,
// scale down, a hand-deleted WebServer and deletion.
func testLifecycle(t *testing.T, b backend) {
	e := startOperator(t, b, controller.Options{})
	key := meta.Key{Namespace: "shop", Name: "blog"}
	site := e.create(t, key.Namespace, key.Name, api.WebsiteSpec{Domain: "blog.example.com", Replicas: 3, Content: "hello"})
	if site.Generation != 1 {
		t.Fatalf("new Website has generation %d", site.Generation)
	}

	eventually(t, "Website ready with 3 replicas", func() error { return e.converged(t, key) })
	site, err := e.website(key)
	if err != nil {
		t.Fatal(err)
	}
	if !site.HasFinalizer(controller.Finalizer) {
		t.Errorf("finalizers %v, want %s", site.Finalizers, controller.Finalizer)
	}
	if got := e.dnsRecords(t); len(got) != 1 || got["blog.example.com"] != "shop/blog" {
		t.Errorf("DNS records %v", got)
	}

	// Scale up: a spec change bumps the generation, and the status
	// follows it.
	site = e.updateSpec(t, key, func(s *api.WebsiteSpec) { s.Replicas = 5 })
	if site.Generation != 2 {
		t.Fatalf("generation after scaling %d, want 2", site.Generation)
	}
	eventually(t, "Website ready with 5 replicas at generation 2", func() error { return e.converged(t, key) })

	// New content rolls out to every WebServer (their generation bumps
	// and they start it again).
	before := map[string]int64{}
	for _, ws := range e.webServers(t, key.Namespace) {
		before[ws.Name] = ws.Generation
	}
	e.updateSpec(t, key, func(s *api.WebsiteSpec) { s.Content = "hello, v2" })
	eventually(t, "content v2 rolled out", func() error { return e.converged(t, key) })
	for _, ws := range e.webServers(t, key.Namespace) {
		if ws.Generation != before[ws.Name]+1 {
			t.Errorf("WebServer %s generation %d, was %d before the content change", ws.Name, ws.Generation, before[ws.Name])
		}
	}

	// Scale down deletes the highest-numbered WebServers.
	e.updateSpec(t, key, func(s *api.WebsiteSpec) { s.Replicas = 2 })
	eventually(t, "scaled down to 2", func() error { return e.converged(t, key) })
	if site, _ := e.website(key); site.Generation != 4 || site.Status.ObservedGeneration != 4 {
		t.Errorf("generation %d, observedGeneration %d after three spec changes, want 4 and 4", site.Generation, site.Status.ObservedGeneration)
	}

	// A WebServer deleted by hand comes back (a new incarnation).
	victim := &api.WebServer{}
	if err := e.st.Get(context.Background(), meta.Key{Namespace: key.Namespace, Name: "blog-1"}, victim); err != nil {
		t.Fatal(err)
	}
	if err := e.st.Delete(context.Background(), victim); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted WebServer recreated", func() error {
		ws := &api.WebServer{}
		if err := e.st.Get(context.Background(), meta.KeyOf(victim), ws); err != nil {
			return err
		}
		if ws.UID == victim.UID {
			return fmt.Errorf("still the deleted incarnation %s", ws.UID)
		}
		return e.converged(t, key)
	})

	// Deleting the Website runs the finalizer (the DNS record goes while
	// the Website is still there, marked), then the garbage collector
	// deletes the WebServers.
	site, _ = e.website(key)
	if err := e.st.Delete(context.Background(), &api.Website{ObjectMeta: meta.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Website gone", func() error {
		if _, err := e.website(key); !errs.IsNotFound(err) {
			return fmt.Errorf("Get: %v", err)
		}
		return nil
	})
	if got := e.dns.removals(); len(got) == 0 || got[0] != "shop/blog: being deleted" {
		t.Errorf("DNS removals %q, want the first while the Website was being deleted", got)
	}
	if got := e.dnsRecords(t); len(got) != 0 {
		t.Errorf("DNS records after deletion: %v", got)
	}
	eventually(t, "WebServers garbage-collected", func() error {
		if left := e.webServers(t, key.Namespace); len(left) != 0 {
			return fmt.Errorf("%d WebServers left, the first %s", len(left), left[0].Name)
		}
		return nil
	})

	// A new Website of the same name is a new incarnation and gets its
	// own WebServers.
	e.create(t, key.Namespace, key.Name, api.WebsiteSpec{Domain: "blog.example.com", Replicas: 1, Content: "again"})
	eventually(t, "recreated Website ready", func() error { return e.converged(t, key) })
	if again, _ := e.website(key); again.UID == site.UID {
		t.Errorf("recreated Website has the old uid")
	}
}

// testInvalidAndConflict checks the two ways a Website cannot be Ready:
// a spec that cannot be served, and a domain another Website holds.
func testInvalidAndConflict(t *testing.T, b backend) {
	e := startOperator(t, b, controller.Options{DomainRetry: 100 * time.Millisecond})
	bad := meta.Key{Namespace: "team", Name: "bad"}
	e.create(t, bad.Namespace, bad.Name, api.WebsiteSpec{Domain: "Not A Domain", Replicas: 2})
	eventually(t, "invalid spec reported", func() error {
		site, err := e.website(bad)
		if err != nil {
			return err
		}
		if err := condition(site.Status.Conditions, api.ConditionReady, meta.ConditionFalse, api.ReasonInvalidSpec, 1); err != nil {
			return err
		}
		if c := meta.FindCondition(site.Status.Conditions, api.ConditionReady); !strings.Contains(c.Message, "spec.domain") {
			return fmt.Errorf("message %q does not name spec.domain", c.Message)
		}
		return nil
	})
	if ws := e.webServers(t, bad.Namespace); len(ws) != 0 {
		t.Errorf("an invalid Website got %d WebServers", len(ws))
	}
	if got := e.dnsRecords(t); len(got) != 0 {
		t.Errorf("an invalid Website got DNS records %v", got)
	}
	// Fixing the spec is a new generation, which is reconciled again
	// even though the invalid one was a terminal error.
	e.updateSpec(t, bad, func(s *api.WebsiteSpec) { s.Domain = "good.example.com" })
	eventually(t, "fixed Website ready", func() error { return e.converged(t, bad) })

	// A second Website asking for the same domain waits for it.
	second := meta.Key{Namespace: "other", Name: "copycat"}
	e.create(t, second.Namespace, second.Name, api.WebsiteSpec{Domain: "good.example.com", Replicas: 1})
	eventually(t, "domain conflict reported", func() error {
		site, err := e.website(second)
		if err != nil {
			return err
		}
		if site.Status.URL != "" {
			return fmt.Errorf("url %q while the domain is taken", site.Status.URL)
		}
		return condition(site.Status.Conditions, api.ConditionReady, meta.ConditionFalse, api.ReasonDomainTaken, 1)
	})
	if got := e.dnsRecords(t)["good.example.com"]; got != "team/bad" {
		t.Errorf("domain held by %q, want the first Website", got)
	}
	if err := e.st.Delete(context.Background(), &api.Website{ObjectMeta: meta.ObjectMeta{Namespace: bad.Namespace, Name: bad.Name}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "second Website takes over the freed domain", func() error { return e.converged(t, second) })
	if got := e.dnsRecords(t); len(got) != 1 || got["good.example.com"] != "other/copycat" {
		t.Errorf("DNS records %v", got)
	}
}

// testStartupDelay checks that a slow start shows: WebServers are Starting
// for at least the delay, and the Website reports Progressing meanwhile.
func testStartupDelay(t *testing.T, b backend) {
	const delay = 500 * time.Millisecond
	e := startOperator(t, b, controller.Options{StartupDelay: delay})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sites, err := e.st.Watch(ctx, api.WebsiteKind, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	servers, err := e.st.Watch(ctx, api.WebServerKind, store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := meta.Key{Namespace: "slow", Name: "site"}
	e.create(t, key.Namespace, key.Name, api.WebsiteSpec{Domain: "slow.example.com", Replicas: 1})
	eventually(t, "Website ready", func() error { return e.converged(t, key) })

	// Every WebServer state written, in order.
	var starting, serving *meta.Condition
	for starting == nil || serving == nil {
		ev := next(t, servers)
		ws := ev.Object.(*api.WebServer)
		c := meta.FindCondition(ws.Status.Conditions, api.ConditionReady)
		switch {
		case c == nil:
		case c.Reason == api.ReasonStarting && serving == nil:
			starting = c
		case c.Reason == api.ReasonServing:
			if starting == nil {
				t.Fatalf("WebServer served before it was Starting: %+v", ws.Status)
			}
			serving = c
		}
	}
	if took := serving.LastTransitionTime.Sub(starting.LastTransitionTime); took < delay {
		t.Errorf("WebServer became Ready %v after Starting, want at least %v", took, delay)
	}

	// The Website's first status said Progressing, its last Complete.
	var first, last *api.Website
	for last == nil || meta.FindCondition(last.Status.Conditions, api.ConditionProgressing) == nil ||
		meta.FindCondition(last.Status.Conditions, api.ConditionProgressing).Reason != api.ReasonComplete {
		site := next(t, sites).Object.(*api.Website)
		if first == nil && len(site.Status.Conditions) > 0 {
			first = site
		}
		last = site
	}
	if err := condition(first.Status.Conditions, api.ConditionProgressing, meta.ConditionTrue, api.ReasonRollingOut, 1); err != nil {
		t.Errorf("first status: %v", err)
	}
	if err := condition(first.Status.Conditions, api.ConditionReady, meta.ConditionFalse, api.ReasonReplicasNotReady, 1); err != nil {
		t.Errorf("first status: %v", err)
	}
}

func next(t *testing.T, ch <-chan store.Event) store.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch closed")
		}
		if ev.Type == store.Error || ev.Type == store.Expired {
			t.Fatalf("watch ended: %s %v", ev.Type, ev.Err)
		}
		return ev
	case <-time.After(waitFor):
		t.Fatalf("no event within %v", waitFor)
	}
	return store.Event{}
}
