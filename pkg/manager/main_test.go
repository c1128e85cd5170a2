package manager_test

import (
	"testing"

	"go.uber.org/goleak"
)

// A stopped manager leaves nothing running: servers, caches, controllers
// and the garbage collector all end with it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
