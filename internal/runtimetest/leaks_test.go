package runtimetest

import (
	"strings"
	"testing"
	"time"
)

// fakeT records what CheckLeaks reports.
type fakeT struct {
	testing.TB
	errors   []string
	cleanups []func()
}

func (f *fakeT) Helper()                           {}
func (f *fakeT) Cleanup(fn func())                 { f.cleanups = append(f.cleanups, fn) }
func (f *fakeT) Errorf(format string, args ...any) { f.errors = append(f.errors, format) }

func (f *fakeT) finish() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

func leakMarker(stop chan struct{}) { <-stop }

func TestCheckLeaks(t *testing.T) {
	defer func(d time.Duration) { leakWait = d }(leakWait)
	leakWait = 200 * time.Millisecond

	// A goroutine that outlives the test is reported.
	f := &fakeT{TB: t}
	CheckLeaks(f)
	stop := make(chan struct{})
	go leakMarker(stop)
	f.finish()
	close(stop)
	if len(f.errors) != 1 {
		t.Fatalf("a leaked goroutine was not reported (%d errors)", len(f.errors))
	}

	// One that ends during the wait is not; nor is one that existed
	// before the check.
	before := make(chan struct{})
	go leakMarker(before)
	defer close(before)
	f = &fakeT{TB: t}
	CheckLeaks(f)
	stop = make(chan struct{})
	go leakMarker(stop)
	go func() { time.Sleep(50 * time.Millisecond); close(stop) }()
	f.finish()
	if len(f.errors) != 0 {
		t.Fatalf("reported %q", f.errors)
	}
}

func TestServerSide(t *testing.T) {
	for stack, want := range map[string]bool{
		"goroutine 7 [select]:\ngithub.com/FerretDB/FerretDB/internal/clientconn.(*conn).run.func2()":                                    true,
		"goroutine 8 [running]:\nsync.(*Mutex).Unlock()\ncreated by github.com/capstanhq/capstan/pkg/store/embedded.(*front).acceptLoop": true,
		"goroutine 9 [select]:\ngithub.com/capstanhq/capstan/pkg/source.(*Informer).Run()":                                               false,
		"goroutine 10 [IO wait]:\ngo.mongodb.org/mongo-driver/v2/x/mongo/driver/topology.(*connection).read()":                           false,
	} {
		if got := serverSide(stack); got != want {
			t.Errorf("serverSide(%q) = %v", strings.SplitN(stack, "\n", 2)[1], got)
		}
	}
}
