package source_test

import (
	"testing"

	"github.com/capstanhq/capstan/pkg/store/mongo/mongotest"
)

// The tests share one embedded MongoDB-wire server for the mongo cases.
// Every informer, cache and source must stop its goroutines when its
// context ends: each test checks that with runtimetest.CheckLeaks.
func TestMain(m *testing.M) { mongotest.Main(m) }
