package mongotest

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// helperEnv, when set, makes the test binary a child that starts the shared
// server, reports its address and data directory in the named file, and
// fails.
const helperEnv = "MONGOTEST_HELPER_OUT"

func TestMain(m *testing.M) { Main(m) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func TestSharedServerAndClient(t *testing.T) {
	if os.Getenv(EnvURI) != "" {
		t.Skip("uses the embedded server")
	}
	uri := URI(t)
	if !strings.HasPrefix(uri, "mongodb://127.0.0.1:") || URI(t) != uri {
		t.Fatalf("URI %q, then %q", uri, URI(t))
	}
	c := Client(t)
	if Client(t) != c {
		t.Fatal("Client is not shared")
	}
	if err := c.Ping(ctx(t), nil); err != nil {
		t.Fatal(err)
	}
}

func TestDatabaseIsolatedAndDropped(t *testing.T) {
	var names []string
	for _, sub := range []string{"one", "two"} {
		t.Run(sub, func(t *testing.T) {
			db := Database(t)
			names = append(names, db.Name())
			if _, err := db.Collection("c").InsertOne(ctx(t), bson.D{{Key: "_id", Value: sub}}); err != nil {
				t.Fatal(err)
			}
			if n, err := db.Collection("c").CountDocuments(ctx(t), bson.D{}); err != nil || n != 1 {
				t.Fatalf("a fresh database holds %d documents (%v)", n, err)
			}
			all, err := Client(t).ListDatabaseNames(ctx(t), bson.D{})
			if err != nil || !slices.Contains(all, db.Name()) {
				t.Fatalf("database %s not listed in %v (%v)", db.Name(), all, err)
			}
		})
	}
	if names[0] == names[1] {
		t.Fatalf("two tests got database %s", names[0])
	}
	all, err := Client(t).ListDatabaseNames(ctx(t), bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if slices.Contains(all, n) {
			t.Errorf("database %s survived its test", n)
		}
	}
}

func TestDatabaseName(t *testing.T) {
	valid := regexp.MustCompile(`^t_[A-Za-z0-9_]{1,40}_[0-9a-f]{12}$`)
	t.Run("a/very long name with spaces, dots. and $ signs that goes on and on", func(t *testing.T) {
		a, b := DatabaseName(t), DatabaseName(t)
		if a == b {
			t.Fatalf("DatabaseName repeated %s", a)
		}
		for _, n := range []string{a, b} {
			if !valid.MatchString(n) || len(n) > 63 {
				t.Fatalf("bad database name %q", n)
			}
		}
	})
}

func TestNewServerIsDedicated(t *testing.T) {
	s := NewServer(t)
	if os.Getenv(EnvURI) == "" && s.URI() == URI(t) {
		t.Fatal("NewServer returned the shared server")
	}
	c, err := mongo.Connect(options.Client().ApplyURI(s.URI()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	coll := c.Database("d").Collection("c")
	if _, err := coll.InsertOne(ctx(t), bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := coll.FindOne(ctx(t), bson.D{{Key: "_id", Value: 1}}).Err(); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}

func TestEnvURIWins(t *testing.T) {
	external := NewServer(t) // stands in for a real MongoDB
	// Drop the shared client for external before external stops.
	t.Cleanup(func() {
		shared.mu.Lock()
		defer shared.mu.Unlock()
		if c := shared.clients[external.URI()]; c != nil {
			_ = c.Disconnect(context.Background())
			delete(shared.clients, external.URI())
		}
	})
	t.Setenv(EnvURI, external.URI())
	if got := URI(t); got != external.URI() {
		t.Fatalf("URI = %q, want $%s %q", got, EnvURI, external.URI())
	}
	db := Database(t)
	if _, err := db.Collection("c").InsertOne(ctx(t), bson.D{{Key: "x", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	direct, err := mongo.Connect(options.Client().ApplyURI(external.URI()))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Disconnect(context.Background())
	if n, err := direct.Database(db.Name()).Collection("c").CountDocuments(ctx(t), bson.D{}); err != nil || n != 1 {
		t.Fatalf("the write did not reach $%s: %d, %v", EnvURI, n, err)
	}
}

// The child's only test starts the shared server and fails; Main must
// still stop the server and remove its directory.
func TestHelperFailsWithSharedServer(t *testing.T) {
	out := os.Getenv(helperEnv)
	if out == "" {
		t.Skip("runs as a child of TestMainStopsSharedServerWhenTestsFail")
	}
	uri := URI(t)
	shared.mu.Lock()
	info := shared.server.Addr() + "\n" + shared.dir
	shared.mu.Unlock()
	if err := os.WriteFile(out, []byte(info), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Errorf("failing on purpose with a server at %s", uri)
}

func TestMainStopsSharedServerWhenTestsFail(t *testing.T) {
	if os.Getenv(helperEnv) != "" || os.Getenv(EnvURI) != "" {
		t.Skip("the child runs the embedded server only")
	}
	out := filepath.Join(t.TempDir(), "server")
	cmd := exec.CommandContext(ctx(t), os.Args[0], "-test.run=^TestHelperFailsWithSharedServer$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+out)
	output, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("child: %v, want exit code 1\n%s", err, output)
	}
	info, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("child did not start the server: %v\n%s", err, output)
	}
	addr, dir, _ := strings.Cut(string(info), "\n")
	if c, err := net.DialTimeout("tcp", addr, 5*time.Second); err == nil {
		_ = c.Close()
		t.Errorf("the child's server at %s still accepts connections", addr)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the child's data directory %s remains: %v", dir, err)
	}
}
