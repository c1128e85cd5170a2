package runtimetest

import (
	"context"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/embedded"
	"github.com/capstanhq/capstan/pkg/store/mongo"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongotest"
)

// MongoBackend is the Mongo store on the test binary's shared server
// (mongotest: the embedded FerretDB, or $MONGODB_URI), each store in a
// database of its own. A package using it calls mongotest.Main from its
// TestMain.
var MongoBackend = Backend{Name: "mongo", New: Mongo, Warm: func(t testing.TB) { mongotest.Client(t) }}

// Mongo returns a Mongo store over scheme in a new database of the shared
// test server, closed (and the database dropped) when the test ends. The
// store has a client of its own, so that closing it ends every connection
// (and, on the embedded server, their goroutines) the test opened.
func Mongo(t testing.TB, scheme *store.Scheme) store.Store {
	t.Helper()
	db := mongotest.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	st, err := mongo.Open(ctx, mongotest.URI(t), scheme, mongo.Options{Database: db.Name()})
	if err != nil {
		t.Fatalf("mongo store: %v", err)
	}
	closeOnCleanup(t, st)
	return st
}

// MongoOn returns a Mongo store over scheme on srv with a client of its
// own (mongo.Open), closed when the test ends. Tests that stop and start
// srv use it: the store must reconnect by itself.
func MongoOn(t testing.TB, srv *embedded.Server, scheme *store.Scheme) store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	st, err := mongo.Open(ctx, srv.URI(), scheme, mongo.Options{Database: mongotest.DatabaseName(t), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("mongo store: %v", err)
	}
	closeOnCleanup(t, st)
	return st
}

func closeOnCleanup(t testing.TB, st store.Store) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), Wait)
		defer cancel()
		if err := st.Close(ctx); err != nil {
			t.Errorf("close mongo store: %v", err)
		}
	})
}
