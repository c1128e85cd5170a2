package mongotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/capstanhq/capstan/pkg/store/embedded"
)

// EnvURI names the environment variable that points tests at an external
// MongoDB instead of the embedded server.
const EnvURI = "MONGODB_URI"

// startTimeout bounds starting an embedded server and the first ping of a
// client; the race detector makes both several times slower.
const startTimeout = 2 * time.Minute

// shared is the test binary's shared embedded server and its clients.
var shared struct {
	mu      sync.Mutex
	server  *embedded.Server
	dir     string
	err     error // a failed start, reported to every later caller
	clients map[string]*mongo.Client
}

// Main runs the tests of m, then disconnects the shared clients and stops
// the shared embedded server if one was started, and exits with the code
// of m.Run. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if err := shutdown(); err != nil && code == 0 {
		os.Stderr.WriteString("mongotest: " + err.Error() + "\n")
		code = 1
	}
	os.Exit(code)
}

// shutdown disconnects the shared clients and stops and removes the shared
// server.
func shutdown() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	// A client whose server is gone spends its whole context trying to end
	// its sessions; do not let that hold up the exit.
	dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer dcancel()
	for uri, c := range shared.clients {
		_ = c.Disconnect(dctx)
		delete(shared.clients, uri)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	var err error
	if shared.server != nil {
		err = shared.server.Stop(ctx)
		shared.server = nil
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
		shared.dir = ""
	}
	return err
}

// URI returns $MONGODB_URI if it is set, else the URI of the test binary's
// shared embedded server, which it starts on first use. It fails t if the
// server cannot start.
func URI(t testing.TB) string {
	t.Helper()
	if uri := os.Getenv(EnvURI); uri != "" {
		return uri
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.server == nil && shared.err == nil {
		shared.err = startShared()
	}
	if shared.err != nil {
		t.Fatalf("mongotest: shared embedded server: %v", shared.err)
	}
	return shared.server.URI()
}

// startShared starts the shared server; called with shared.mu held.
func startShared() error {
	dir, err := os.MkdirTemp("", "capstan-mongotest-")
	if err != nil {
		return err
	}
	s, err := embedded.New(embedded.Options{DataDir: dir, Addr: "127.0.0.1:0"})
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		err = s.Start(ctx)
		cancel()
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return err
	}
	shared.server, shared.dir = s, dir
	return nil
}

// Client returns the test binary's shared client for URI(t). Tests must not
// disconnect it.
func Client(t testing.TB) *mongo.Client {
	t.Helper()
	uri := URI(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if c := shared.clients[uri]; c != nil {
		return c
	}
	c, err := connect(uri)
	if err != nil {
		t.Fatalf("mongotest: connect to %s: %v", uri, err)
	}
	if shared.clients == nil {
		shared.clients = map[string]*mongo.Client{}
	}
	shared.clients[uri] = c
	return c
}

// connect returns a client for uri that has answered a ping.
func connect(uri string) (*mongo.Client, error) {
	c, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := c.Ping(ctx, nil); err != nil {
		_ = c.Disconnect(ctx)
		return nil, err
	}
	return c, nil
}

// Database returns a database with a name unique to this test on the
// shared client, and drops it when the test ends.
func Database(t testing.TB) *mongo.Database {
	t.Helper()
	db := Client(t).Database(DatabaseName(t))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		if err := db.Drop(ctx); err != nil {
			t.Errorf("mongotest: drop database %s: %v", db.Name(), err)
		}
	})
	return db
}

// DatabaseName returns a new database name, unique within the server, that
// starts with a readable form of the test's name.
func DatabaseName(t testing.TB) string {
	var b strings.Builder
	b.WriteString("t_")
	for _, r := range t.Name() {
		if b.Len() >= 40 {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	b.WriteByte('_')
	b.WriteString(hex.EncodeToString(suffix[:]))
	return b.String()
}

// NewServer starts a dedicated embedded server for t in its own temporary
// directory on a free loopback port, and stops it when the test ends. It is
// for tests that stop and restart a server; it is always embedded, also
// when MONGODB_URI is set.
func NewServer(t testing.TB) *embedded.Server {
	t.Helper()
	s, err := embedded.New(embedded.Options{DataDir: t.TempDir(), Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("mongotest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatalf("mongotest: start embedded server: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("mongotest: stop embedded server: %v", err)
		}
	})
	return s
}
