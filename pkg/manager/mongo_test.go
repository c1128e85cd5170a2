package manager_test

import (
	"context"
	"testing"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongotest"
)

func TestGarbageCollectorMongo(t *testing.T) { testGarbageCollector(t, runtimetest.MongoBackend) }

func TestRuntimeMongo(t *testing.T) { testRuntime(t, runtimetest.MongoBackend) }

// TestRuntimeSurvivesAServerRestart stops the embedded server under a
// running manager and starts it again on the same address and data: the
// store reconnects, the caches resume or relist, and every change made
// after the restart is reconciled.
func TestRuntimeSurvivesAServerRestart(t *testing.T) {
	runtimetest.CheckLeaks(t)
	srv := mongotest.NewServer(t)
	st := runtimetest.MongoOn(t, srv, runtimetest.NewScheme())
	h := newHarness(t, st, st, manager.Options{Cache: fastCache})
	h.start(t)
	ctx := context.Background()
	outage(t, h, func() {
		if err := srv.Stop(ctx); err != nil {
			t.Fatalf("stop the server: %v", err)
		}
	}, func() {
		if err := srv.Start(ctx); err != nil {
			t.Fatalf("start the server again: %v", err)
		}
	}, false)
}
