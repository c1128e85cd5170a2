package controller_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Stopped controllers leave no goroutines behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
