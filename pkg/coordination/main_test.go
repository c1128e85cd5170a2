package coordination

import (
	"testing"

	"go.uber.org/goleak"
)

// Everything a test starts ends with it: electors, memberships, lock
// holders, observers and sharders leave no goroutines behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
