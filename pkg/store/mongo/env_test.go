package mongo

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/capstanhq/capstan/pkg/store/embedded"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongotest"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongox"
)

// The store's tests share one embedded server of their own, like
// mongotest's but with a small oplog trimmed every second: on FerretDB
// every read of the oplog reads all of it, so a watch reacts to a write in
// time proportional to the oplog's length, and the conformance suite
// writes thousands of entries. With MONGODB_URI set they use that server.
var testServer struct {
	once   sync.Once
	server *embedded.Server
	dir    string
	uri    string
	err    error
	client *mongo.Client
}

// TestMain stops the package's server after the tests. (mongotest's
// shared server is never started here: with MONGODB_URI set only its
// client is used.)
func TestMain(m *testing.M) {
	code := m.Run()
	stopTestServer()
	os.Exit(code)
}

func stopTestServer() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if testServer.client != nil {
		_ = testServer.client.Disconnect(ctx)
	}
	if testServer.server != nil {
		_ = testServer.server.Stop(ctx)
		_ = os.RemoveAll(testServer.dir)
	}
}

// testURI returns $MONGODB_URI, or the URI of the package's embedded
// server.
func testURI(t testing.TB) string {
	t.Helper()
	if uri := os.Getenv(mongotest.EnvURI); uri != "" {
		return uri
	}
	testServer.once.Do(func() {
		testServer.dir, testServer.err = os.MkdirTemp("", "capstan-mongo-store-test-")
		if testServer.err != nil {
			return
		}
		testServer.server, testServer.err = embedded.New(embedded.Options{
			DataDir: testServer.dir, Addr: "127.0.0.1:0", OplogSize: 4 << 20, CleanupInterval: time.Second,
		})
		if testServer.err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			testServer.err = testServer.server.Start(ctx)
			cancel()
		}
		if testServer.err == nil {
			testServer.uri = testServer.server.URI()
			testServer.client, testServer.err = mongox.Connect(context.Background(), testServer.uri, mongox.ConnectOptions{})
		}
	})
	if testServer.err != nil {
		t.Fatalf("test server: %v", testServer.err)
	}
	return testServer.uri
}

// testClient returns the shared client of testURI.
func testClient(t testing.TB) *mongo.Client {
	t.Helper()
	if os.Getenv(mongotest.EnvURI) != "" {
		return mongotest.Client(t)
	}
	testURI(t)
	return testServer.client
}

// testDatabase returns a database name for t, dropped when t ends.
func testDatabase(t testing.TB) string {
	t.Helper()
	name := mongotest.DatabaseName(t)
	client := testClient(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = client.Database(name).Drop(ctx)
	})
	return name
}
