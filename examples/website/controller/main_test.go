package controller_test

import (
	"testing"

	"github.com/capstanhq/capstan/pkg/store/mongo/mongotest"
)

// TestMain shares one embedded Mongo-wire server (or $MONGODB_URI) among
// the tests and stops it afterwards.
func TestMain(m *testing.M) { mongotest.Main(m) }
