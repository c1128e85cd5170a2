package manager_test

import (
	"testing"

	"github.com/capstanhq/capstan/pkg/store/mongo/mongotest"
)

// The tests share one embedded MongoDB-wire server for the mongo backend.
// Leaked goroutines are checked per test (runtimetest.CheckLeaks): a
// stopped manager leaves nothing running.
func TestMain(m *testing.M) { mongotest.Main(m) }
