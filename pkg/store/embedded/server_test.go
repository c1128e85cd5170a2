package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.uber.org/goleak"

	"github.com/capstanhq/capstan/pkg/errs"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testCtx returns a context that ends with the test or after testWait.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*testWait)
	t.Cleanup(cancel)
	return ctx
}

// startServer starts a server on a free port in a temporary directory and
// stops it when the test ends.
func startServer(t testing.TB, mod ...func(*Options)) *Server {
	t.Helper()
	opts := Options{DataDir: t.TempDir(), Addr: "127.0.0.1:0"}
	if tt, ok := t.(*testing.T); ok {
		opts.Logger = testLogger(tt)
	}
	for _, f := range mod {
		f(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(context.Background()); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return s
}

// longAwait is a maxAwaitTime longer than any test waits for a condition,
// and shorter than the contexts of testCtx as the driver requires: a
// getMore that returns within testWait was woken, not timed out.
const longAwait = 3 * testWait / 2

// noTimeout lifts the client-side operation timeout, which the driver
// requires to exceed maxAwaitTime.
func noTimeout(o *options.ClientOptions) { o.Timeout = nil }

// frontOf returns the front of a running server.
func frontOf(s *Server) *front {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.run.front
}

// connect returns a driver client for uri, disconnected when the test ends.
func connect(t testing.TB, uri string, mod ...func(*options.ClientOptions)) *mongo.Client {
	t.Helper()
	o := options.Client().ApplyURI(uri).SetTimeout(2 * testWait)
	for _, f := range mod {
		f(o)
	}
	c, err := mongo.Connect(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
}

func TestNewValidatesOptions(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name  string
		opts  Options
		field string
	}{
		{"no data dir", Options{}, "DataDir"},
		{"addr without port", Options{DataDir: dir, Addr: "localhost"}, "Addr"},
		{"port out of range", Options{DataDir: dir, Addr: "127.0.0.1:65536"}, "Addr"},
		{"port not a number", Options{DataDir: dir, Addr: "127.0.0.1:mongo"}, "Addr"},
		{"negative oplog size", Options{DataDir: dir, OplogSize: -1}, "OplogSize"},
		{"tiny oplog size", Options{DataDir: dir, OplogSize: 100}, "OplogSize"},
		{"negative oplog entries", Options{DataDir: dir, OplogMaxEntries: -5}, "OplogMaxEntries"},
		{"negative max conns", Options{DataDir: dir, MaxConns: -1}, "MaxConns"},
		{"negative backend timeout", Options{DataDir: dir, BackendTimeout: -time.Second}, "BackendTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.opts)
			if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != tt.field {
				t.Fatalf("New: %v (code %v, field %q), want InvalidArgument on %s", err, errs.CodeOf(err), errs.FieldOf(err), tt.field)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	s, err := New(Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	o := s.opts
	if o.Addr != DefaultAddr || o.OplogSize != DefaultOplogSize || o.OplogMaxEntries != DefaultOplogMaxEntries || o.MaxConns != DefaultMaxConns ||
		o.BackendTimeout != DefaultBackendTimeout || o.CleanupInterval != DefaultCleanupInterval || o.Logger == nil {
		t.Fatalf("defaults not applied: %+v", o)
	}
	if s.Addr() != DefaultAddr || s.URI() != "mongodb://127.0.0.1:27017/?directConnection=true" {
		t.Fatalf("Addr %q URI %q", s.Addr(), s.URI())
	}
}

func TestURIForUnspecifiedHost(t *testing.T) {
	for addr, want := range map[string]string{
		":27017":         "mongodb://127.0.0.1:27017/?directConnection=true",
		"0.0.0.0:1":      "mongodb://127.0.0.1:1/?directConnection=true",
		"[::]:2":         "mongodb://127.0.0.1:2/?directConnection=true",
		"[::1]:3":        "mongodb://[::1]:3/?directConnection=true",
		"10.1.2.3:27018": "mongodb://10.1.2.3:27018/?directConnection=true",
	} {
		s, err := New(Options{DataDir: t.TempDir(), Addr: addr})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.URI(); got != want {
			t.Errorf("URI for %q = %q, want %q", addr, got, want)
		}
	}
}

// A wildcard listener reports [::] once started; the URI must still name
// an IPv4 loopback, reachable where IPv6 is off.
func TestURIOfStartedWildcardListener(t *testing.T) {
	s := startServer(t, func(o *Options) { o.Addr = "0.0.0.0:0" })
	u := s.URI()
	if !strings.HasPrefix(u, "mongodb://127.0.0.1:") {
		t.Fatalf("URI = %q (Addr %q), want 127.0.0.1", u, s.Addr())
	}
	c, err := mongo.Connect(options.Client().ApplyURI(u))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	if err := c.Ping(testCtx(t), nil); err != nil {
		t.Fatalf("ping %s: %v", u, err)
	}
}

func TestStartStopStates(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t)
	if err := s.Start(ctx); !errs.IsFailedPrecondition(err) {
		t.Fatalf("second Start: %v, want FailedPrecondition", err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("Stop of a stopped server: %v", err)
	}
}

func TestDataDirInUse(t *testing.T) {
	s := startServer(t)
	other, err := New(Options{DataDir: s.opts.DataDir, Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Start(testCtx(t)); !errs.IsFailedPrecondition(err) {
		_ = other.Stop(context.Background())
		t.Fatalf("Start on a data directory in use: %v, want FailedPrecondition", err)
	}
}

func TestAddrInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s, err := New(Options{DataDir: t.TempDir(), Addr: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(testCtx(t)); !errs.IsUnavailable(err) {
		_ = s.Stop(context.Background())
		t.Fatalf("Start on a taken port: %v, want Unavailable", err)
	}
	// The failed Start released the data directory.
	s2, err := New(Options{DataDir: s.opts.DataDir, Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(testCtx(t)); err != nil {
		t.Fatalf("Start after a failed Start: %v", err)
	}
	if err := s2.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Eight writers increment one document by compare-and-swap; every
// successful swap must be a distinct version.
func TestCompareAndSwapIsExact(t *testing.T) {
	s := startServer(t)
	c := connect(t, s.URI())
	const writers, perWriter = 8, 15

	swaps := map[string]func(ctx context.Context, coll *mongo.Collection, old int32) (bool, error){
		"findOneAndUpdate": func(ctx context.Context, coll *mongo.Collection, old int32) (bool, error) {
			err := coll.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: "x"}, {Key: "v", Value: old}},
				bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: old + 1}}}}).Err()
			if errors.Is(err, mongo.ErrNoDocuments) {
				return false, nil
			}
			return err == nil, err
		},
		"updateOne": func(ctx context.Context, coll *mongo.Collection, old int32) (bool, error) {
			res, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "x"}, {Key: "v", Value: old}},
				bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: old + 1}}}})
			if err != nil {
				return false, err
			}
			return res.ModifiedCount == 1, nil
		},
	}
	for name, swap := range swaps {
		t.Run(name, func(t *testing.T) {
			ctx := testCtx(t)
			coll := c.Database("cas").Collection(name)
			if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "x"}, {Key: "v", Value: int32(0)}}); err != nil {
				t.Fatal(err)
			}
			var successes, conflicts atomic.Int64
			var wg sync.WaitGroup
			errc := make(chan error, writers)
			for range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for done := 0; done < perWriter; {
						var cur struct{ V int32 }
						if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "x"}}).Decode(&cur); err != nil {
							errc <- err
							return
						}
						ok, err := swap(ctx, coll, cur.V)
						if err != nil {
							errc <- err
							return
						}
						if ok {
							successes.Add(1)
							done++
						} else {
							conflicts.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			close(errc)
			for err := range errc {
				t.Fatal(err)
			}
			var final struct{ V int32 }
			if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "x"}}).Decode(&final); err != nil {
				t.Fatal(err)
			}
			if int64(final.V) != successes.Load() || final.V != writers*perWriter {
				t.Fatalf("%d successful swaps, final version %d (want %d); %d conflicts",
					successes.Load(), final.V, writers*perWriter, conflicts.Load())
			}
			t.Logf("%d swaps, %d conflicts", successes.Load(), conflicts.Load())
		})
	}
}

// Concurrent inserts of one _id: exactly one wins, the others get
// duplicate key errors.
func TestConcurrentInsertUniqueness(t *testing.T) {
	s := startServer(t)
	c := connect(t, s.URI())
	ctx := testCtx(t)
	coll := c.Database("uniq").Collection("c")
	const rounds, writers = 10, 8
	for round := range rounds {
		id := fmt.Sprintf("id-%d", round)
		var ok, dup atomic.Int32
		var wg sync.WaitGroup
		errc := make(chan error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "writer", Value: w}})
				switch {
				case err == nil:
					ok.Add(1)
				case mongo.IsDuplicateKeyError(err):
					dup.Add(1)
				default:
					errc <- err
				}
			}()
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Fatal(err)
		}
		if ok.Load() != 1 || dup.Load() != writers-1 {
			t.Fatalf("round %d: %d inserts succeeded, %d duplicate key errors", round, ok.Load(), dup.Load())
		}
	}
	n, err := coll.CountDocuments(ctx, bson.D{})
	if err != nil || n != rounds {
		t.Fatalf("count %d, %v", n, err)
	}
}

// A long awaitData getMore (a read) is in flight on one connection while
// writes on others complete; the getMore only returns once the document it
// waits for is written.
func TestLongReadDoesNotBlockWrites(t *testing.T) {
	s := startServer(t)
	c := connect(t, s.URI(), noTimeout)
	ctx := testCtx(t)
	db := c.Database("tail")
	if err := db.CreateCollection(ctx, "capped", options.CreateCollection().SetCapped(true).SetSizeInBytes(1<<20)); err != nil {
		t.Fatal(err)
	}
	capped := db.Collection("capped")
	if _, err := capped.InsertOne(ctx, bson.D{{Key: "n", Value: 0}}); err != nil {
		t.Fatal(err)
	}
	cur, err := capped.Find(ctx, bson.D{}, options.Find().SetCursorType(options.TailableAwait).
		SetBatchSize(1).SetMaxAwaitTime(longAwait))
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close(context.Background())
	if !cur.Next(ctx) { // the first batch
		t.Fatal(cur.Err())
	}

	got := make(chan bson.Raw, 1)
	go func() {
		if cur.Next(ctx) { // a getMore that waits up to longAwait
			got <- cur.Current
		}
		close(got)
	}()
	other := db.Collection("other")
	for i := range 5 {
		if _, err := other.InsertOne(ctx, bson.D{{Key: "i", Value: i}}); err != nil {
			t.Fatal(err)
		}
		if _, err := other.UpdateOne(ctx, bson.D{{Key: "i", Value: i}}, bson.D{{Key: "$set", Value: bson.D{{Key: "u", Value: true}}}}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case doc := <-got:
		t.Fatalf("the getMore returned before the awaited write: %v", doc)
	default:
	}
	if _, err := capped.InsertOne(ctx, bson.D{{Key: "n", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	select {
	case doc, ok := <-got:
		if !ok || doc.Lookup("n").AsInt64() != 1 {
			t.Fatalf("getMore ended with %v (%v)", doc, cur.Err())
		}
	case <-time.After(testWait):
		t.Fatal("the getMore did not see the new document")
	}
}

// While a write holds the write lock, a find completes and another write
// waits until the lock is released.
func TestReadsPassAHeldWriteLock(t *testing.T) {
	s := startServer(t)
	c := connect(t, s.URI())
	ctx := testCtx(t)
	coll := c.Database("lock").Collection("c")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}

	s.writeLock <- struct{}{} // as a write in progress would
	writeDone := make(chan error, 1)
	go func() {
		_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 2}})
		writeDone <- err
	}()
	if n, err := coll.CountDocuments(ctx, bson.D{}); err != nil || n != 1 {
		t.Fatalf("count under a held write lock: %d, %v", n, err)
	}
	var doc bson.M
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Decode(&doc); err != nil {
		t.Fatalf("find under a held write lock: %v", err)
	}
	select {
	case err := <-writeDone:
		t.Fatalf("a write completed while the write lock was held: %v", err)
	default:
	}
	<-s.writeLock
	if err := <-writeDone; err != nil {
		t.Fatal(err)
	}
}

func TestOplogCreatedAndFed(t *testing.T) {
	s := startServer(t, func(o *Options) { o.OplogSize = 1 << 20; o.OplogMaxEntries = 500 })
	c := connect(t, s.URI())
	ctx := testCtx(t)

	specs, err := c.Database(OplogDatabase).ListCollectionSpecifications(ctx, bson.D{{Key: "name", Value: OplogCollection}})
	if err != nil || len(specs) != 1 {
		t.Fatalf("oplog specification: %v, %v", specs, err)
	}
	if capped, _ := specs[0].Options.Lookup("capped").BooleanOK(); !capped {
		t.Fatalf("oplog is not capped: %v", specs[0].Options)
	}
	if size := specs[0].Options.Lookup("size").AsInt64(); size != 1<<20 {
		t.Fatalf("oplog size %d, want %d", size, 1<<20)
	}
	if n := specs[0].Options.Lookup("max").AsInt64(); n != 500 {
		t.Fatalf("oplog max %d, want 500", n)
	}

	coll := c.Database("app").Collection("things")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "v", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "a"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: 2}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: "a"}}, bson.D{{Key: "w", Value: 3}}); err != nil {
		t.Fatal(err)
	}
	if err := coll.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: "a"}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "w", Value: 1}}}}).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: "a"}}); err != nil {
		t.Fatal(err)
	}

	cur, err := c.Database(OplogDatabase).Collection(OplogCollection).Find(ctx, bson.D{{Key: "ns", Value: "app.things"}})
	if err != nil {
		t.Fatal(err)
	}
	var entries []bson.Raw
	if err := cur.All(ctx, &entries); err != nil {
		t.Fatal(err)
	}
	// The shapes the oplog tailer relies on: an update (also a replacement
	// and findAndModify) records the whole new document under o.$set.
	want := []struct{ op, o, o2 string }{
		{"i", `{"_id": "a","v": {"$numberInt":"1"}}`, ""},
		{"u", `{"$v": {"$numberInt":"1"},"$set": {"_id": "a","v": {"$numberInt":"2"}}}`, `{"_id": "a"}`},
		{"u", `{"$v": {"$numberInt":"1"},"$set": {"_id": "a","w": {"$numberInt":"3"}}}`, `{"_id": "a"}`},
		{"u", `{"$v": {"$numberInt":"1"},"$set": {"_id": "a","w": {"$numberInt":"4"}}}`, `{"_id": "a"}`},
		{"d", `{"_id": "a"}`, ""},
	}
	if len(entries) != len(want) {
		t.Fatalf("%d oplog entries, want %d: %v", len(entries), len(want), entries)
	}
	var lastT, lastI uint32
	for i, e := range entries {
		op, _ := e.Lookup("op").StringValueOK()
		o := e.Lookup("o").Document().String()
		var o2 string
		if v, err := e.LookupErr("o2"); err == nil {
			o2 = v.Document().String()
		}
		if op != want[i].op || o != want[i].o || o2 != want[i].o2 {
			t.Errorf("entry %d: op %q o %s o2 %s, want op %q o %s o2 %s", i, op, o, o2, want[i].op, want[i].o, want[i].o2)
		}
		ts, inc, ok := e.Lookup("ts").TimestampOK()
		if !ok || ts < lastT || (ts == lastT && inc <= lastI) {
			t.Errorf("entry %d: ts (%d, %d) not after (%d, %d)", i, ts, inc, lastT, lastI)
		}
		lastT, lastI = ts, inc
		if _, ok := e.Lookup("wall").DateTimeOK(); !ok {
			t.Errorf("entry %d has no wall time: %v", i, e)
		}
	}
}

func TestExistingUncappedOplogIsRefused(t *testing.T) {
	s := startServer(t)
	c := connect(t, s.URI())
	ctx := testCtx(t)
	if err := c.Database(OplogDatabase).Collection(OplogCollection).Drop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Database(OplogDatabase).Collection(OplogCollection).InsertOne(ctx, bson.D{{Key: "x", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); !errs.IsFailedPrecondition(err) {
		t.Fatalf("Start with an uncapped oplog: %v, want FailedPrecondition", err)
	}
}

func TestRestartKeepsDataAndAddress(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	addr := s.Addr()
	if strings.HasSuffix(addr, ":0") {
		t.Fatalf("Addr %q is not the bound address", addr)
	}
	c := connect(t, s.URI())
	if _, err := c.Database("keep").Collection("c").InsertOne(ctx, bson.D{{Key: "_id", Value: "before"}}); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		if err := s.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.Start(ctx); err != nil {
			t.Fatalf("restart %d: %v", round, err)
		}
		if s.Addr() != addr {
			t.Fatalf("restart %d moved the server from %s to %s", round, addr, s.Addr())
		}
	}
	c2 := connect(t, s.URI())
	coll := c2.Database("keep").Collection("c")
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "before"}}).Err(); err != nil {
		t.Fatalf("data written before the restart: %v", err)
	}
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "after"}}); err != nil {
		t.Fatal(err)
	}
	if n, err := c2.Database(OplogDatabase).Collection(OplogCollection).CountDocuments(ctx, bson.D{{Key: "ns", Value: "keep.c"}}); err != nil || n != 2 {
		t.Fatalf("oplog entries across the restart: %d, %v", n, err)
	}
	// The client from before the restart reconnects by itself.
	if err := c.Database("keep").Collection("c").FindOne(ctx, bson.D{{Key: "_id", Value: "after"}}).Err(); err != nil {
		t.Fatalf("old client after restart: %v", err)
	}
}

// Entries written after a restart sort after the ones before it, also when
// the restart happens within the same second.
func TestRestartWaitsPastTheNewestEntrySecond(t *testing.T) {
	s := startServer(t)
	c := connect(t, s.URI())
	ctx := testCtx(t)
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second))) // start of a second
	if _, err := c.Database("ts").Collection("c").InsertOne(ctx, bson.D{{Key: "x", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	var newest bson.Raw
	if err := c.Database(OplogDatabase).Collection(OplogCollection).FindOne(ctx, bson.D{{Key: "ns", Value: "ts.c"}}).Decode(&newest); err != nil {
		t.Fatal(err)
	}
	sec, _ := newest.Lookup("ts").Timestamp()
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if now := time.Now().Unix(); now <= int64(sec) {
		t.Fatalf("Start returned at %d, within the second %d of the newest entry", now, sec)
	}
}

// A client that sends half a message and stalls, and one that sends a bad
// length, do not affect a driver's writes.
func TestBadClientsDoNotHarmOthers(t *testing.T) {
	s := startServer(t)
	c := connect(t, s.URI())
	ctx := testCtx(t)

	stalled := dialRaw(t, s.Addr())
	msg := opMsg(1, 0, cmd("insert"))
	stalled.send(msg[:len(msg)-3])

	for _, n := range []uint32{0, 3, 0xffffffff, MaxMessageSize + 1} {
		bad := dialRaw(t, s.Addr())
		var hdr [16]byte
		hdr[0], hdr[1], hdr[2], hdr[3] = byte(n), byte(n>>8), byte(n>>16), byte(n>>24)
		bad.send(hdr[:])
		bad.expectClosed()
	}
	garbage := dialRaw(t, s.Addr())
	garbage.send(append([]byte{40, 0, 0, 0}, []byte(strings.Repeat("x", 36))...))
	garbage.expectClosed() // the backend rejects the message and hangs up

	coll := c.Database("bad").Collection("c")
	for i := range 10 {
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "i", Value: i}}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := coll.CountDocuments(ctx, bson.D{}); err != nil || n != 10 {
		t.Fatalf("count %d, %v", n, err)
	}
}

// waitConns waits until the server has n client connections.
func waitConns(t *testing.T, s *Server, n int) {
	t.Helper()
	f := frontOf(s)
	deadline := time.Now().Add(testWait)
	for f.conns() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d client connections, want %d", f.conns(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMaxConns(t *testing.T) {
	s := startServer(t, func(o *Options) { o.MaxConns = 2 })
	waitConns(t, s, 0) // Start's own ping connection is gone
	a := dialRaw(t, s.Addr())
	b := dialRaw(t, s.Addr())
	for i, c := range []*rawClient{a, b} {
		c.send(opMsg(int32(i), 0, cmd("ping")))
		if _, _, err := c.recv(); err != nil {
			t.Fatal(err)
		}
	}
	extra := dialRaw(t, s.Addr())
	extra.send(opMsg(5, 0, cmd("ping")))
	extra.expectClosed()

	_ = a.c.Close()
	waitConns(t, s, 1)
	again := dialRaw(t, s.Addr())
	again.send(opMsg(6, 0, cmd("ping")))
	if _, _, err := again.recv(); err != nil {
		t.Fatalf("a connection after one closed: %v", err)
	}
}

func TestUnacknowledgedWrites(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	w0 := connect(t, s.URI(), func(o *options.ClientOptions) {
		o.SetWriteConcern(writeconcern.Unacknowledged()).SetMaxPoolSize(1)
	})
	coll := w0.Database("w0").Collection("c")
	for i := range 20 {
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "i", Value: i}}); err != nil {
			t.Fatal(err)
		}
	}
	// The same single connection still pairs replies with requests.
	deadline := time.Now().Add(testWait)
	for {
		n, err := coll.CountDocuments(ctx, bson.D{})
		if err != nil {
			t.Fatal(err)
		}
		if n == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 20 unacknowledged inserts arrived", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCleanupTrimsCappedCollections(t *testing.T) {
	s := startServer(t, func(o *Options) {
		o.OplogSize = 64 << 10
		o.CleanupInterval = 50 * time.Millisecond
	})
	c := connect(t, s.URI())
	ctx := testCtx(t)
	coll := c.Database("trim").Collection("c")
	pad := strings.Repeat("p", 1000)
	docs := make([]any, 200)
	for i := range docs {
		docs[i] = bson.D{{Key: "i", Value: i}, {Key: "pad", Value: pad}}
	}
	if _, err := coll.InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	oplog := c.Database(OplogDatabase).Collection(OplogCollection)
	deadline := time.Now().Add(testWait)
	for {
		var first bson.Raw
		if err := oplog.FindOne(ctx, bson.D{}).Decode(&first); err != nil {
			t.Fatal(err)
		}
		if i := first.Lookup("o", "i").AsInt64(); i > 0 {
			break // the oldest entries are gone
		}
		if time.Now().After(deadline) {
			t.Fatal("the oplog was not trimmed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n, err := coll.CountDocuments(ctx, bson.D{}); err != nil || n != 200 {
		t.Fatalf("trimming touched a regular collection: %d, %v", n, err)
	}
}

func TestCleanupCapsOplogEntries(t *testing.T) {
	s := startServer(t, func(o *Options) {
		o.OplogMaxEntries = 40
		o.CleanupInterval = 50 * time.Millisecond
	})
	c := connect(t, s.URI())
	ctx := testCtx(t)
	docs := make([]any, 200)
	for i := range docs {
		docs[i] = bson.D{{Key: "i", Value: i}}
	}
	if _, err := c.Database("trim").Collection("c").InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	oplog := c.Database(OplogDatabase).Collection(OplogCollection)
	deadline := time.Now().Add(testWait)
	for {
		n, err := oplog.CountDocuments(ctx, bson.D{})
		if err != nil {
			t.Fatal(err)
		}
		if n <= 40 {
			var last bson.Raw
			err := oplog.FindOne(ctx, bson.D{}, options.FindOne().SetSort(bson.D{{Key: "$natural", Value: -1}})).Decode(&last)
			if err != nil || last.Lookup("o", "i").AsInt64() != 199 {
				t.Fatalf("trimming removed the newest entry: %v, %v", last, err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the oplog still holds %d entries", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStopLeavesNoGoroutines(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	ctx := testCtx(t)
	s, err := New(Options{DataDir: t.TempDir(), Addr: "127.0.0.1:0", CleanupInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		c, err := mongo.Connect(options.Client().ApplyURI(s.URI()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Database("leak").Collection("c").InsertOne(ctx, bson.D{{Key: "x", Value: 1}}); err != nil {
			t.Fatal(err)
		}
		stalled := dialRaw(t, s.Addr())
		stalled.send([]byte{64, 0, 0})
		// Stop with the client still connected, then disconnect it.
		if err := s.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		_ = c.Disconnect(ctx)
	}
	if _, err := os.Stat(filepath.Join(s.opts.DataDir, "backend.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("backend socket left behind: %v", err)
	}
	goleak.VerifyNone(t, ignore)
}

// newCapped creates a capped collection holding n documents {n: i}.
func newCapped(t *testing.T, c *mongo.Client, n int) *mongo.Collection {
	t.Helper()
	ctx := testCtx(t)
	db := c.Database("tail")
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	if err := db.CreateCollection(ctx, name, options.CreateCollection().SetCapped(true).SetSizeInBytes(1<<20)); err != nil {
		t.Fatal(err)
	}
	coll := db.Collection(name)
	for i := range n {
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "n", Value: i}}); err != nil {
			t.Fatal(err)
		}
	}
	return coll
}

// An idle awaitData tailer is served by the front: its getMores do not
// reach the backend until something is written.
func TestIdleTailerDoesNotPollTheBackend(t *testing.T) {
	s := startServer(t)
	c := connect(t, s.URI())
	ctx := testCtx(t)
	coll := newCapped(t, c, 1)
	// A first batch smaller than batchSize would close a tailable cursor.
	cur, err := coll.Find(ctx, bson.D{}, options.Find().SetCursorType(options.TailableAwait).
		SetBatchSize(1).SetMaxAwaitTime(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close(context.Background())
	if !cur.Next(ctx) {
		t.Fatal(cur.Err())
	}
	// The first batch was full: the first getMore asks the backend.
	if cur.TryNext(ctx) || cur.Err() != nil {
		t.Fatalf("first getMore: %v %v", cur.Current, cur.Err())
	}
	tails := frontOf(s).tails
	before := tails.forwarded.Load()
	for range 10 {
		if cur.TryNext(ctx) {
			t.Fatalf("got %v from an idle collection", cur.Current)
		}
		if cur.Err() != nil || cur.ID() == 0 {
			t.Fatalf("cursor died: %v", cur.Err())
		}
	}
	if n := tails.forwarded.Load() - before; n != 0 {
		t.Fatalf("%d idle getMores reached the backend", n)
	}
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "n", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(testWait)
	for !cur.TryNext(ctx) {
		if cur.Err() != nil || time.Now().After(deadline) {
			t.Fatalf("the new document did not arrive: %v", cur.Err())
		}
	}
	if got := cur.Current.Lookup("n").AsInt64(); got != 1 {
		t.Fatalf("got n=%d", got)
	}
	if tails.forwarded.Load() == before {
		t.Fatal("the document arrived without a getMore reaching the backend")
	}
}

// A cursor whose batches are full has more to give without any write.
func TestTailerGetsBufferedResultsWithoutWrites(t *testing.T) {
	s := startServer(t)
	c := connect(t, s.URI(), noTimeout)
	ctx := testCtx(t)
	coll := newCapped(t, c, 7)
	cur, err := coll.Find(ctx, bson.D{}, options.Find().SetCursorType(options.TailableAwait).
		SetBatchSize(2).SetMaxAwaitTime(longAwait))
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close(context.Background())
	for i := range 7 {
		if !cur.Next(ctx) {
			t.Fatalf("document %d: %v", i, cur.Err())
		}
		if got := cur.Current.Lookup("n").AsInt64(); got != int64(i) {
			t.Fatalf("document %d has n=%d", i, got)
		}
	}
}

// getMore on a killed awaitData cursor fails at once with CursorNotFound
// instead of waiting for maxTimeMS.
func TestKilledTailCursor(t *testing.T) {
	s := startServer(t)
	c := connect(t, s.URI(), noTimeout)
	ctx := testCtx(t)
	coll := newCapped(t, c, 1)
	cur, err := coll.Find(ctx, bson.D{}, options.Find().SetCursorType(options.TailableAwait).
		SetBatchSize(1).SetMaxAwaitTime(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	id := cur.ID()
	if id == 0 || !cur.Next(ctx) {
		t.Fatalf("cursor closed after the first batch: %v", cur.Err())
	}
	// Drain the cursor, so that only a write would make the front ask the
	// backend again.
	if cur.TryNext(ctx) || cur.Err() != nil {
		t.Fatalf("getMore: %v %v", cur.Current, cur.Err())
	}
	if err := cur.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// The driver adds maxTimeMS, the time left in ctx.
	err = coll.Database().RunCommand(ctx, bson.D{{Key: "getMore", Value: id}, {Key: "collection", Value: coll.Name()}}).Err()
	var ce mongo.CommandError
	if !errors.As(err, &ce) || ce.Code != codeCursorNotFound {
		t.Fatalf("getMore on a killed cursor: %v, want CursorNotFound", err)
	}
}

// The backend removes a cursor when the connection that opened it closes;
// a getMore from another connection then fails instead of waiting.
func TestTailCursorDiesWithItsConnection(t *testing.T) {
	s := startServer(t)
	c := connect(t, s.URI())
	coll := newCapped(t, c, 2)
	owner := dialRaw(t, s.Addr())
	owner.send(opMsg(1, 0, bsoncore.NewDocumentBuilder().
		AppendString("find", coll.Name()).AppendBoolean("tailable", true).AppendBoolean("awaitData", true).
		AppendInt32("batchSize", 1).AppendString("$db", "tail").Build()))
	_, body, err := owner.recv()
	if err != nil {
		t.Fatal(err)
	}
	id := body.Lookup("cursor", "id").Int64()
	if id == 0 {
		t.Fatalf("no cursor: %v", body)
	}
	getMore := func(reqID int32, maxTime time.Duration) []byte {
		return opMsg(reqID, 0, bsoncore.NewDocumentBuilder().
			AppendInt64("getMore", id).AppendString("collection", coll.Name()).
			AppendInt64("maxTimeMS", int64(maxTime/time.Millisecond)).AppendString("$db", "tail").Build())
	}
	// Read the second document, then drain the cursor, so that only a write
	// would make the front ask the backend again.
	for i, want := range []int{1, 0} {
		owner.send(getMore(int32(10+i), 10*time.Millisecond))
		_, reply, err := owner.recv()
		if err != nil {
			t.Fatal(err)
		}
		if vals, _ := reply.Lookup("cursor", "nextBatch").Array().Values(); len(vals) != want {
			t.Fatalf("getMore %d: %v", i, reply)
		}
	}
	_ = owner.c.Close()
	other := dialRaw(t, s.Addr())
	deadline := time.Now().Add(testWait)
	for reqID := int32(20); ; reqID++ {
		other.send(getMore(reqID, longAwait))
		_, reply, err := other.recv()
		if err != nil {
			t.Fatal(err)
		}
		if code, _ := reply.Lookup("code").AsInt32OK(); code == codeCursorNotFound {
			return
		}
		// The backend had not removed the cursor yet: the getMore was
		// answered right away all the same.
		if time.Now().After(deadline) {
			t.Fatalf("getMore on an orphaned cursor: %v", reply)
		}
	}
}

// A tail of the oplog sees every write, in order, once.
func TestOplogTailSeesWritesInOrder(t *testing.T) {
	s := startServer(t)
	c := connect(t, s.URI(), noTimeout)
	ctx := testCtx(t)
	coll := c.Database("app").Collection("tailed")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: -1}}); err != nil {
		t.Fatal(err)
	}
	oplog := c.Database(OplogDatabase).Collection(OplogCollection)
	cur, err := oplog.Find(ctx, bson.D{{Key: "ns", Value: "app.tailed"}}, options.Find().
		SetCursorType(options.TailableAwait).SetBatchSize(1).SetMaxAwaitTime(longAwait))
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close(context.Background())
	if !cur.Next(ctx) {
		t.Fatal(cur.Err())
	}

	const n = 30
	writeErr := make(chan error, 1)
	go func() {
		defer close(writeErr)
		other := c.Database("app").Collection("untailed")
		for i := range n {
			var err error
			switch i % 3 {
			case 0:
				_, err = coll.InsertOne(ctx, bson.D{{Key: "_id", Value: i}})
			case 1:
				_, err = coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: i - 1}}, bson.D{{Key: "$set", Value: bson.D{{Key: "u", Value: i}}}})
			case 2:
				_, err = coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: i - 2}})
			}
			if err == nil {
				_, err = other.InsertOne(ctx, bson.D{{Key: "i", Value: i}}) // wakes the tail with nothing for it
			}
			if err != nil {
				writeErr <- err
				return
			}
		}
	}()
	for i := range n {
		if !cur.Next(ctx) {
			t.Fatalf("entry %d: %v", i, cur.Err())
		}
		op := cur.Current.Lookup("op").StringValue()
		var id int64
		if op == "u" {
			id = cur.Current.Lookup("o2", "_id").AsInt64()
		} else {
			id = cur.Current.Lookup("o", "_id").AsInt64()
		}
		wantOp, wantID := [3]string{"i", "u", "d"}[i%3], int64(i-i%3)
		if op != wantOp || id != wantID {
			t.Fatalf("entry %d: op %s on %d, want %s on %d", i, op, id, wantOp, wantID)
		}
	}
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
}
