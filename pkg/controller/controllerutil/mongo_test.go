package controllerutil_test

import (
	"testing"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongotest"
)

func TestMain(m *testing.M) { mongotest.Main(m) }

// On MongoDB-wire servers compare-and-swap is the store's findAndModify;
// racing writers must still all get through without losing an update.
func TestCreateOrUpdateConvergesUnderConflictsMongo(t *testing.T) {
	testConverges(t, runtimetest.Mongo(t, runtimetest.NewScheme()), 6, 8)
}
