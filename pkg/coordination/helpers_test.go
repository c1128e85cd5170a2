package coordination

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/memory"
)

// Short durations keep the suite fast; waits for conditions are generous.
const (
	testNS       = "coord"
	memberLease  = 600 * time.Millisecond
	memberRenew  = 200 * time.Millisecond
	electLease   = 600 * time.Millisecond
	electRenew   = 400 * time.Millisecond
	electRetry   = 100 * time.Millisecond
	wait         = 30 * time.Second
	pollMin      = time.Millisecond
	pollMax      = 20 * time.Millisecond
	defaultGroup = "svc"
)

// newStore returns a memory store with the coordination kinds, closed when
// the test ends.
func newStore(t testing.TB) *memory.Store {
	t.Helper()
	s := store.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return runtimetest.Memory(t, s)
}

// checkLeaks fails the test if goroutines started after the call still run
// once the cleanups registered after it are done.
func checkLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if err := goleak.Find(ignore); err != nil {
			t.Errorf("goroutines leaked: %v", err)
		}
	})
}

// eventually polls cond until it holds or the deadline passes. The
// deadline only bounds a wait; it is never what a test measures.
func eventually(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(wait)
	delay := pollMin
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", wait, what, msg)
		}
		time.Sleep(delay)
		delay = min(delay*2, pollMax)
	}
}

// starter is anything with a blocking Start.
type starter interface {
	Start(ctx context.Context) error
}

// run starts s in a goroutine; the returned function cancels it and
// returns what Start returned. The test's cleanup stops it if the test
// did not.
func run(t testing.TB, s starter) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(wait):
				err = fmt.Errorf("Start did not return within %v of the cancel", wait)
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return stop
}

// process is one simulated process: a membership and what runs on it.
type process struct {
	m    *Membership
	stop func() error
}

// newMembership returns a started membership of group on st with the
// test's short durations, ready (registered and synced).
func newMembership(t testing.TB, st store.Store, group string) *process {
	t.Helper()
	m, err := NewMembership(MembershipConfig{Store: st, Namespace: testNS, Group: group,
		LeaseDuration: memberLease, RenewInterval: memberRenew})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, m)
	runtimetest.Recv(t, m.Ready(), "membership ready")
	return &process{m: m, stop: stop}
}

// getMember reads a Member (nil if missing).
func getMember(t testing.TB, st store.Store, name string) *Member {
	t.Helper()
	m := &Member{}
	if err := st.Get(context.Background(), meta.Key{Namespace: testNS, Name: name}, m); err != nil {
		return nil
	}
	return m
}

// deleteMember deletes a Member as another process would.
func deleteMember(t testing.TB, st store.Store, name string) {
	t.Helper()
	if err := st.Delete(context.Background(), &Member{ObjectMeta: meta.ObjectMeta{Namespace: testNS, Name: name}}); err != nil {
		t.Fatalf("delete member %s: %v", name, err)
	}
}

func done(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// bareStore is a memory store whose scheme lacks the coordination kinds.
func bareStore(t testing.TB) store.Store {
	t.Helper()
	st := memory.New(store.NewScheme())
	t.Cleanup(func() { _ = st.Close(context.Background()) })
	return st
}
