package source_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every informer, cache and source must stop its goroutines when its
// context ends.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
