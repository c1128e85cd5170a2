package resource

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/coordination"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/ammo"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
	"github.com/capstanhq/capstan/pkg/loadtest/schedule"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongotest"
)

// wait bounds every wait for a condition. It is generous: the machine
// running the tests may be busy. It is never what a test measures.
const wait = 60 * time.Second

const ns = "default"

// The Mongo backend's tests share one embedded MongoDB-wire server;
// goroutine leaks are checked per test (runtimetest.CheckLeaks).
func TestMain(m *testing.M) { mongotest.Main(m) }

// backend makes the store of one test.
type backend = runtimetest.Backend

// newScheme returns a scheme with the LoadTest and coordination kinds.
func newScheme(t *testing.T) *store.Scheme {
	t.Helper()
	s := store.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := coordination.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// newStoreOn returns an empty store of backend b with the LoadTest and
// coordination kinds, closed when the test ends, and checks that the test
// leaves no goroutine behind.
func newStoreOn(t *testing.T, b backend) store.Store {
	t.Helper()
	b.CheckLeaks(t)
	return b.New(t, newScheme(t))
}

// newStore is newStoreOn the memory backend.
func newStore(t *testing.T) store.Store {
	t.Helper()
	return newStoreOn(t, runtimetest.MemoryBackend)
}

// onEachBackend runs test on the memory store and on the Mongo store (the
// embedded MongoDB-wire server, or $MONGODB_URI), unless -short.
func onEachBackend(t *testing.T, test func(t *testing.T, b backend)) {
	for _, b := range []backend{runtimetest.MemoryBackend, runtimetest.MongoBackend} {
		t.Run(b.Name, func(t *testing.T) {
			if b.Name != runtimetest.MemoryBackend.Name && testing.Short() {
				t.Skip("-short: memory store only")
			}
			test(t, b)
		})
	}
}

// replica is one process of the service: a manager with the garbage
// collector and the LoadTest controllers.
type replica struct {
	mgr  *manager.Manager
	stop func()
}

// startReplica starts a replica on st. The test's cleanup stops it.
func startReplica(t *testing.T, st store.Store, opts Options) *replica {
	t.Helper()
	mgr, err := manager.New(manager.Options{Store: st, Logger: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := manager.AddGarbageCollector(mgr, controller.Options{}); err != nil {
		t.Fatal(err)
	}
	if opts.StartDelay == 0 {
		opts.StartDelay = 500 * time.Millisecond
	}
	if opts.ProgressInterval == 0 {
		opts.ProgressInterval = 200 * time.Millisecond
	}
	if err := SetupWithManager(mgr, opts); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("manager: %v", err)
				}
			case <-time.After(wait):
				t.Errorf("manager did not stop within %v", wait)
			}
		})
	}
	t.Cleanup(stop)
	return &replica{mgr: mgr, stop: stop}
}

// target is a local HTTP server whose answers the test controls.
type target struct {
	*httptest.Server
	status   atomic.Int64
	delay    atomic.Int64 // ns each request waits (or until it is canceled)
	requests atomic.Int64 // requests received
	active   atomic.Int64 // requests being served
	canceled atomic.Int64 // requests whose client went away while served
}

func newTarget(t *testing.T) *target {
	s := &target{}
	s.status.Store(http.StatusOK)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.active.Add(1)
		defer s.active.Add(-1)
		if d := time.Duration(s.delay.Load()); d > 0 {
			tm := time.NewTimer(d)
			defer tm.Stop()
			select {
			case <-tm.C:
			case <-r.Context().Done():
				s.canceled.Add(1)
				return
			}
		}
		w.WriteHeader(int(s.status.Load()))
	}))
	t.Cleanup(s.Close)
	return s
}

// spec is a one-pool HTTP test of the target at a constant rate.
func spec(url string, ops float64, d time.Duration) LoadTestSpec {
	return LoadTestSpec{Spec: config.Spec{Pools: []config.Pool{{
		ID:        "p",
		Gun:       config.GunSpec{Type: "http", Target: url, Timeout: config.Duration(30 * time.Second)},
		Ammo:      ammo.Spec{Type: "inline", Requests: []ammo.Ammo{{URI: "/"}}},
		RPS:       []config.ScheduleSpec{{Type: "const", Ops: ops, Duration: config.Duration(d)}},
		Instances: 8,
	}}}}
}

// create stores a LoadTest named name with spec s.
func create(t *testing.T, st store.Store, name string, s LoadTestSpec) *LoadTest {
	t.Helper()
	lt := &LoadTest{ObjectMeta: meta.ObjectMeta{Namespace: ns, Name: name}, Spec: s}
	if err := st.Create(context.Background(), lt); err != nil {
		t.Fatal(err)
	}
	return lt
}

// get reads the LoadTest name from the store.
func get(t *testing.T, st store.Store, name string) *LoadTest {
	t.Helper()
	lt := &LoadTest{}
	if err := st.Get(context.Background(), meta.Key{Namespace: ns, Name: name}, lt); err != nil {
		t.Fatal(err)
	}
	return lt
}

// eventually polls cond until it holds, failing the test after wait.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(wait)
	delay := time.Millisecond
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", wait, what, msg)
		}
		time.Sleep(delay)
		delay = min(delay*2, 50*time.Millisecond)
	}
}

// waitFor waits until the LoadTest name satisfies cond and returns it.
func waitFor(t *testing.T, st store.Store, name, what string, cond func(*LoadTest) bool) *LoadTest {
	t.Helper()
	var lt *LoadTest
	eventually(t, name+" "+what, func() (bool, string) {
		lt = &LoadTest{}
		if err := st.Get(context.Background(), meta.Key{Namespace: ns, Name: name}, lt); err != nil {
			return false, err.Error()
		}
		return cond(lt), describe(lt)
	})
	return lt
}

// waitPhase waits until the LoadTest name is in phase and returns it.
func waitPhase(t *testing.T, st store.Store, name string, phase Phase) *LoadTest {
	t.Helper()
	return waitFor(t, st, name, "in phase "+string(phase), func(lt *LoadTest) bool { return lt.Status.Phase == phase })
}

func describe(lt *LoadTest) string {
	return fmt.Sprintf("phase %q reason %q message %q parts %+v", lt.Status.Phase, lt.Status.Reason, lt.Status.Message, lt.Status.Parts)
}

// mutate applies fn to the stored LoadTest name and updates it, retrying
// lost compare-and-swaps.
func mutate(t *testing.T, st store.Store, name string, fn func(*LoadTest)) {
	t.Helper()
	eventually(t, "updating "+name, func() (bool, string) {
		lt := get(t, st, name)
		fn(lt)
		err := st.Update(context.Background(), lt)
		if errs.IsConflict(err) {
			return false, err.Error()
		}
		if err != nil {
			t.Fatal(err)
		}
		return true, ""
	})
}

// parts lists the LoadTestParts in the store.
func parts(t *testing.T, st store.Store) []*LoadTestPart {
	t.Helper()
	out, _, err := store.ListOf[LoadTestPart](context.Background(), st, store.ListOptions{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runPartDirectly waits for a member of the replicas on st, writes a
// LoadTestPart "sneaky" that gives it all of test, past the LoadTest
// controller and its checks, and waits until the part reaches a final
// phase. It returns the part as last read.
func runPartDirectly(t *testing.T, st store.Store, test config.Spec) *LoadTestPart {
	t.Helper()
	var member string
	eventually(t, "a member", func() (bool, string) {
		ms, _, err := store.ListOf[coordination.Member](context.Background(), st, store.ListOptions{Namespace: ns})
		if err != nil || len(ms) == 0 {
			return false, fmt.Sprint(err)
		}
		member = ms[0].Name
		return true, ""
	})
	p := &LoadTestPart{ObjectMeta: meta.ObjectMeta{Namespace: ns, Name: "sneaky"},
		Spec: LoadTestPartSpec{Member: member, Share: schedule.Share{Count: 1}, Test: test}}
	if err := st.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the part to fail", func() (bool, string) {
		if err := st.Get(context.Background(), meta.KeyOf(p), p); err != nil {
			return false, err.Error()
		}
		return p.Status.Phase.Final(), string(p.Status.Phase)
	})
	return p
}

// condition returns the condition of type typ, failing the test if absent.
func condition(t *testing.T, lt *LoadTest, typ string) meta.Condition {
	t.Helper()
	c := meta.FindCondition(lt.Status.Conditions, typ)
	if c == nil {
		t.Fatalf("no %s condition: %+v", typ, lt.Status.Conditions)
	}
	return *c
}
