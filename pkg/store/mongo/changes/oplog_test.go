package changes

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.uber.org/goleak"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/store/embedded"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongotest"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongox"
)

func TestMain(m *testing.M) { mongotest.Main(m) }

// eventTimeout bounds waiting for one event: generous, for -race.
const eventTimeout = 30 * time.Second

// oplogClient returns the test server's client, skipping the test when
// the server has no oplog to tail (MONGODB_URI at a server without one).
func oplogClient(t *testing.T) *mongo.Client {
	t.Helper()
	c := mongotest.Client(t)
	names, err := c.Database("local").ListCollectionNames(context.Background(), bson.D{{Key: "name", Value: "oplog.rs"}})
	if err != nil || len(names) == 0 {
		t.Skipf("the test server has no readable local.oplog.rs (%v)", err)
	}
	return c
}

func newFeed(t *testing.T, c *mongo.Client, o Options) *OplogFeed {
	t.Helper()
	f := NewOplog(c, o)
	t.Cleanup(func() {
		if err := f.Close(context.Background()); err != nil {
			t.Errorf("close feed: %v", err)
		}
	})
	return f
}

func subscribe(t *testing.T, f Feed, o SubscribeOptions) Subscription {
	t.Helper()
	s, err := f.Subscribe(t.Context(), o)
	if err != nil {
		t.Fatalf("Subscribe from %s: %v", o.From, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// next returns the next event or fails.
func next(t *testing.T, s Subscription) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), eventTimeout)
	defer cancel()
	ev, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return ev
}

func collect(t *testing.T, s Subscription, n int) []Event {
	t.Helper()
	out := make([]Event, 0, n)
	for range n {
		out = append(out, next(t, s))
	}
	return out
}

// quiet fails if s delivers an event within d.
func quiet(t *testing.T, s Subscription, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	if ev, err := s.Next(ctx); err == nil {
		t.Fatalf("unexpected event %s %s at %s", ev.Op, ev.ID, ev.Position)
	}
}

// summary describes an event for comparison.
func summary(evs []Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = fmt.Sprintf("%s %s %s", ev.Op, ev.Namespace.Coll, ev.ID)
	}
	return out
}

func nsOf(c *mongo.Collection) Namespace {
	return Namespace{DB: c.Database().Name(), Coll: c.Name()}
}

func TestOplogFeedDeliversChanges(t *testing.T) {
	client := oplogClient(t)
	coll := mongotest.Database(t).Collection("c")
	ctx := t.Context()
	for _, mode := range []struct {
		name string
		opts Options
	}{{"awaitData", Options{}}, {"polling", Options{PollInterval: 5 * time.Millisecond}}} {
		t.Run(mode.name, func(t *testing.T) {
			f := newFeed(t, client, mode.opts)
			s := subscribe(t, f, SubscribeOptions{Namespaces: []Namespace{nsOf(coll)}})
			id := "doc-" + mode.name
			if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "n", Value: 1}}); err != nil {
				t.Fatal(err)
			}
			if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$set", Value: bson.D{{Key: "n", Value: 2}}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "n", Value: 3}}); err != nil {
				t.Fatal(err)
			}
			if _, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}}); err != nil {
				t.Fatal(err)
			}
			evs := collect(t, s, 4)
			wantN := []int32{1, 2, 3}
			for i, ev := range evs {
				if got, _ := ev.ID.StringValueOK(); got != id {
					t.Errorf("event %d is about %s", i, ev.ID)
				}
				if i < 3 {
					if ev.Document == nil {
						t.Fatalf("event %d (%s) has no document", i, ev.Op)
					}
					if n := ev.Document.Lookup("n").AsInt64(); n != int64(wantN[i]) {
						t.Errorf("event %d document has n=%d, want %d", i, n, wantN[i])
					}
				}
				if i > 0 {
					if c, _ := evs[i-1].Position.Compare(ev.Position); c >= 0 {
						t.Errorf("positions do not increase: %s then %s", evs[i-1].Position, ev.Position)
					}
				}
				if ev.Time.IsZero() {
					t.Errorf("event %d has no time", i)
				}
			}
			if evs[0].Op != OpInsert || evs[3].Op != OpDelete || evs[3].Document != nil {
				t.Errorf("ops %v", summary(evs))
			}
			for _, ev := range evs[1:3] {
				if ev.Op != OpUpdate && ev.Op != OpReplace {
					t.Errorf("op %s, want update or replace", ev.Op)
				}
			}
			if c, _ := s.Position().Compare(evs[3].Position); c < 0 {
				t.Errorf("Position %s is before the last event's %s", s.Position(), evs[3].Position)
			}
			quiet(t, s, 300*time.Millisecond)
		})
	}
}

func TestOplogFeedNamespacesAreSeparate(t *testing.T) {
	client := oplogClient(t)
	db := mongotest.Database(t)
	a, b, other := db.Collection("a"), db.Collection("b"), db.Collection("other")
	f := newFeed(t, client, Options{})
	sa := subscribe(t, f, SubscribeOptions{Namespaces: []Namespace{nsOf(a)}})
	sab := subscribe(t, f, SubscribeOptions{Namespaces: []Namespace{nsOf(a), nsOf(b)}})
	for i, c := range []*mongo.Collection{other, a, other, b, a} {
		if _, err := c.InsertOne(t.Context(), bson.D{{Key: "_id", Value: i}}); err != nil {
			t.Fatal(err)
		}
	}
	if got := summary(collect(t, sa, 2)); !slices.Equal(got, []string{`insert a {"$numberInt":"1"}`, `insert a {"$numberInt":"4"}`}) {
		t.Errorf("subscription of a got %v", got)
	}
	if got := summary(collect(t, sab, 3)); !slices.Equal(got, []string{`insert a {"$numberInt":"1"}`, `insert b {"$numberInt":"3"}`, `insert a {"$numberInt":"4"}`}) {
		t.Errorf("subscription of a and b got %v", got)
	}
	quiet(t, sa, 200*time.Millisecond)
}

// writeMany inserts n documents and updates every third.
func writeMany(t *testing.T, c *mongo.Collection, prefix string, n int) {
	t.Helper()
	for i := range n {
		id := fmt.Sprintf("%s-%03d", prefix, i)
		if _, err := c.InsertOne(t.Context(), bson.D{{Key: "_id", Value: id}, {Key: "i", Value: i}}); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			if _, err := c.UpdateOne(t.Context(), bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$set", Value: bson.D{{Key: "u", Value: true}}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestOplogFeedResumesExactlyAfterAPosition(t *testing.T) {
	client := oplogClient(t)
	coll := mongotest.Database(t).Collection("c")
	ns := []Namespace{nsOf(coll)}
	// History 1 makes every resume below read the oplog itself; the
	// default serves them from memory.
	for _, history := range []int{0, 1} {
		t.Run(fmt.Sprint("history", history), func(t *testing.T) {
			f := newFeed(t, client, Options{History: history})
			start, err := f.Latest(t.Context(), ns...)
			if err != nil {
				t.Fatal(err)
			}
			all := subscribe(t, f, SubscribeOptions{Namespaces: ns, From: start})
			prefix := fmt.Sprint("h", history)
			writeMany(t, coll, prefix, 12)
			evs := collect(t, all, 16)
			for _, i := range []int{0, 5, 14, 15} {
				r := subscribe(t, f, SubscribeOptions{Namespaces: ns, From: evs[i].Position})
				got := collect(t, r, len(evs)-1-i)
				if !slices.Equal(summary(got), summary(evs[i+1:])) {
					t.Errorf("from event %d got\n%v\nwant\n%v", i, summary(got), summary(evs[i+1:]))
				}
				quiet(t, r, 100*time.Millisecond)
			}
			// From a position given as a string, as a client would.
			p, err := ParsePosition(evs[7].Position.String())
			if err != nil {
				t.Fatal(err)
			}
			r := subscribe(t, f, SubscribeOptions{Namespaces: ns, From: p})
			if got := summary(collect(t, r, 8)); !slices.Equal(got, summary(evs[8:])) {
				t.Errorf("from a parsed position got %v", got)
			}
		})
	}
}

func TestOplogFeedSlowSubscriberExpiresAlone(t *testing.T) {
	client := oplogClient(t)
	coll := mongotest.Database(t).Collection("c")
	ns := []Namespace{nsOf(coll)}
	f := newFeed(t, client, Options{})
	slow := subscribe(t, f, SubscribeOptions{Namespaces: ns, Buffer: 3})
	fast := subscribe(t, f, SubscribeOptions{Namespaces: ns})
	writeMany(t, coll, "x", 8) // 11 events
	evs := collect(t, fast, 11)
	if evs[10].ID.StringValue() != "x-007" {
		t.Errorf("fast subscriber's last event is about %s", evs[10].ID)
	}
	ctx, cancel := context.WithTimeout(t.Context(), eventTimeout)
	defer cancel()
	var err error
	for range 4 {
		if _, err = slow.Next(ctx); err != nil {
			break
		}
	}
	if !IsExpired(err) {
		t.Fatalf("slow subscriber got %v, want expiry", err)
	}
	if _, err := slow.Next(ctx); !IsExpired(err) {
		t.Errorf("an expired subscription delivered again: %v", err)
	}
	// The feed goes on.
	if _, err := coll.InsertOne(t.Context(), bson.D{{Key: "_id", Value: "after"}}); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, fast); ev.ID.StringValue() != "after" {
		t.Errorf("after the expiry got %s", ev.ID)
	}
}

func TestOplogFeedManySubscribersFromManyPositions(t *testing.T) {
	client := oplogClient(t)
	coll := mongotest.Database(t).Collection("c")
	ns := []Namespace{nsOf(coll)}
	f := newFeed(t, client, Options{History: 8})
	start, err := f.Latest(t.Context(), ns...)
	if err != nil {
		t.Fatal(err)
	}
	truth := subscribe(t, f, SubscribeOptions{Namespaces: ns, From: start})
	const writes = 60
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range writes {
			if _, err := coll.InsertOne(context.Background(), bson.D{{Key: "_id", Value: i}}); err != nil {
				t.Errorf("insert: %v", err)
				return
			}
		}
	}()
	// Subscribers join while the writer writes, each from a position
	// somewhere behind the feed: from memory, from the oplog, or ahead.
	var got []Event
	type joined struct {
		after int // events of truth before its start
		sub   Subscription
	}
	var subs []joined
	r := rand.New(rand.NewPCG(1, 1))
	for len(got) < writes {
		got = append(got, next(t, truth))
		if len(got)%7 == 0 {
			back := r.IntN(len(got))
			subs = append(subs, joined{after: back + 1, sub: subscribe(t, f, SubscribeOptions{Namespaces: ns, From: got[back].Position})})
		}
	}
	<-done
	var wg sync.WaitGroup
	for _, j := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
			defer cancel()
			for k := j.after; k < writes; k++ {
				ev, err := j.sub.Next(ctx)
				if err != nil {
					t.Errorf("subscriber from event %d: %v", j.after, err)
					return
				}
				if ev.Position != got[k].Position || !ev.ID.Equal(got[k].ID) {
					t.Errorf("subscriber from event %d: event %d is %s at %s, want %s at %s", j.after, k, ev.ID, ev.Position, got[k].ID, got[k].Position)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestOplogFeedLatestExcludesEarlierWrites(t *testing.T) {
	client := oplogClient(t)
	coll := mongotest.Database(t).Collection("c")
	ns := []Namespace{nsOf(coll)}
	for _, mode := range []Options{{}, {PollInterval: 5 * time.Millisecond}} {
		f := newFeed(t, client, mode)
		warm := subscribe(t, f, SubscribeOptions{Namespaces: ns}) // the tailer runs
		_ = warm
		for i := range 3 {
			before := fmt.Sprintf("before-%d-%v", i, mode.PollInterval)
			if _, err := coll.InsertOne(t.Context(), bson.D{{Key: "_id", Value: before}}); err != nil {
				t.Fatal(err)
			}
			p, err := f.Latest(t.Context(), ns...)
			if err != nil {
				t.Fatal(err)
			}
			s := subscribe(t, f, SubscribeOptions{Namespaces: ns, From: p})
			after := "after-" + before
			if _, err := coll.InsertOne(t.Context(), bson.D{{Key: "_id", Value: after}}); err != nil {
				t.Fatal(err)
			}
			if ev := next(t, s); ev.ID.StringValue() != after {
				t.Errorf("poll %v: first event after Latest is %s, want %s", mode.PollInterval, ev.ID, after)
			}
			// Current never lies after a change made before it.
			c, err := f.Current(t.Context(), ns...)
			if err != nil {
				t.Fatal(err)
			}
			if cmp, _ := c.Compare(p); cmp < 0 {
				t.Errorf("Current %s is before an earlier Latest %s", c, p)
			}
		}
	}
}

func TestOplogFeedRejectsForeignPositions(t *testing.T) {
	client := oplogClient(t)
	f := newFeed(t, client, Options{})
	tok, _ := bson.Marshal(bson.D{{Key: "_data", Value: "82"}})
	_, err := f.Subscribe(t.Context(), SubscribeOptions{Namespaces: []Namespace{{DB: "x", Coll: "y"}}, From: TokenPosition(tok)})
	if !errs.IsInvalidArgument(err) {
		t.Errorf("a change-stream position: %v, want InvalidArgument", err)
	}
	if _, err := f.Subscribe(t.Context(), SubscribeOptions{}); !errs.IsInvalidArgument(err) {
		t.Errorf("no namespaces: %v, want InvalidArgument", err)
	}
	// A position ahead of the oplog was never written: expired, from
	// Subscribe or from the first Next.
	s, err := f.Subscribe(t.Context(), SubscribeOptions{Namespaces: []Namespace{{DB: "x", Coll: "y"}}, From: OplogPosition(bson.Timestamp{T: 1<<32 - 1})})
	if err == nil {
		ctx, cancel := context.WithTimeout(t.Context(), eventTimeout)
		defer cancel()
		_, err = s.Next(ctx)
	}
	if !IsExpired(err) {
		t.Errorf("a position from the future: %v, want expiry", err)
	}
}

func TestOplogFeedLookupReadsTheDocument(t *testing.T) {
	client := oplogClient(t)
	coll := mongotest.Database(t).Collection("c")
	if _, err := coll.InsertOne(t.Context(), bson.D{{Key: "_id", Value: "k"}, {Key: "v", Value: "now"}}); err != nil {
		t.Fatal(err)
	}
	id := bson.RawValue{Type: bson.TypeString, Value: bsonString("k")}
	doc, err := lookup(t.Context(), client, Event{Namespace: nsOf(coll), Op: OpUpdate, ID: id})
	if err != nil || doc.Lookup("v").StringValue() != "now" {
		t.Fatalf("lookup = %s, %v", doc, err)
	}
	gone := bson.RawValue{Type: bson.TypeString, Value: bsonString("gone")}
	if doc, err := lookup(t.Context(), client, Event{Namespace: nsOf(coll), Op: OpUpdate, ID: gone}); err != nil || doc != nil {
		t.Errorf("lookup of a missing document = %s, %v; want nil, nil", doc, err)
	}
}

func bsonString(s string) []byte {
	_, v, _ := bson.MarshalValue(s)
	return v
}

func TestOplogFeedCloseEndsSubscriptions(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	client := oplogClient(t)
	coll := mongotest.Database(t).Collection("c")
	f := NewOplog(client, Options{})
	s, err := f.Subscribe(t.Context(), SubscribeOptions{Namespaces: []Namespace{nsOf(coll)}})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := s.Next(context.Background())
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	if err := f.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !IsClosed(err) {
		t.Errorf("Next after Close: %v, want closed", err)
	}
	if err := f.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := f.Subscribe(ctx, SubscribeOptions{Namespaces: []Namespace{nsOf(coll)}}); !IsClosed(err) {
		t.Errorf("Subscribe after Close: %v", err)
	}
}

func TestOplogFeedStopsWhenIdleAndRestarts(t *testing.T) {
	client := oplogClient(t)
	coll := mongotest.Database(t).Collection("c")
	ns := []Namespace{nsOf(coll)}
	f := newFeed(t, client, Options{IdleTimeout: 100 * time.Millisecond, MaxAwaitTime: 100 * time.Millisecond})
	s := subscribe(t, f, SubscribeOptions{Namespaces: ns})
	if _, err := coll.InsertOne(t.Context(), bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	first := next(t, s)
	_ = s.Close()
	deadline := time.Now().Add(eventTimeout)
	for {
		f.mu.Lock()
		started := f.started
		f.mu.Unlock()
		if !started {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the tailer did not stop without subscriptions")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A subscription from before the stop restarts it where it was.
	if _, err := coll.InsertOne(t.Context(), bson.D{{Key: "_id", Value: 2}}); err != nil {
		t.Fatal(err)
	}
	s2 := subscribe(t, f, SubscribeOptions{Namespaces: ns, From: first.Position})
	if ev := next(t, s2); ev.ID.AsInt64() != 2 {
		t.Errorf("after the restart got %s", ev.ID)
	}
}

// smallServer starts a dedicated embedded server whose oplog keeps only a
// few hundred KiB, trimmed often.
func smallServer(t *testing.T) *embedded.Server {
	t.Helper()
	srv, err := embedded.New(embedded.Options{DataDir: t.TempDir(), Addr: "127.0.0.1:0", OplogSize: 256 << 10, CleanupInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	return srv
}

func connect(t *testing.T, uri string, o mongox.ConnectOptions) *mongo.Client {
	t.Helper()
	c, err := mongox.Connect(t.Context(), uri, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
}

func TestOplogFeedExpiresPositionsTheOplogDropped(t *testing.T) {
	srv := smallServer(t)
	client := connect(t, srv.URI(), mongox.ConnectOptions{})
	coll := client.Database("db").Collection("c")
	ns := []Namespace{nsOf(coll)}
	if _, err := coll.InsertOne(t.Context(), bson.D{{Key: "_id", Value: "first"}}); err != nil {
		t.Fatal(err)
	}
	f := newFeed(t, client, Options{History: 4})
	old, err := f.Latest(t.Context(), ns...)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	blob := strings.Repeat("x", 4096)
	for i := range 200 {
		if _, err := coll.InsertOne(t.Context(), bson.D{{Key: "_id", Value: i}, {Key: "blob", Value: blob}}); err != nil {
			t.Fatal(err)
		}
	}
	g := newFeed(t, client, Options{History: 4})
	// Wait until the trimming has removed the first entry.
	deadline := time.Now().Add(eventTimeout)
	for {
		ok, err := g.exists(t.Context(), old)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the oplog was not trimmed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	s, err := g.Subscribe(t.Context(), SubscribeOptions{Namespaces: ns, From: old})
	if err == nil {
		ctx, cancel := context.WithTimeout(t.Context(), eventTimeout)
		defer cancel()
		_, err = s.Next(ctx)
	}
	if !IsExpired(err) {
		t.Fatalf("subscription from a dropped position: %v, want expiry", err)
	}
	// A recent position still works.
	recent, err := g.Latest(t.Context(), ns...)
	if err != nil {
		t.Fatal(err)
	}
	r := subscribe(t, g, SubscribeOptions{Namespaces: ns, From: recent})
	if _, err := coll.InsertOne(t.Context(), bson.D{{Key: "_id", Value: "last"}}); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, r); ev.ID.StringValue() != "last" {
		t.Errorf("from a recent position got %s", ev.ID)
	}
}

func TestOplogFeedSurvivesServerRestart(t *testing.T) {
	srv := mongotest.NewServer(t)
	client := connect(t, srv.URI(), mongox.ConnectOptions{ServerSelectionTimeout: 2 * time.Second, HeartbeatInterval: 500 * time.Millisecond})
	coll := client.Database("db").Collection("c")
	ns := []Namespace{nsOf(coll)}
	var mu sync.Mutex
	var reported []error
	f := newFeed(t, client, Options{RetryMax: 200 * time.Millisecond, OnError: func(err error) {
		mu.Lock()
		reported = append(reported, err)
		mu.Unlock()
	}})
	s := subscribe(t, f, SubscribeOptions{Namespaces: ns})
	if _, err := coll.InsertOne(t.Context(), bson.D{{Key: "_id", Value: "before"}}); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, s); ev.ID.StringValue() != "before" {
		t.Fatalf("got %s", ev.ID)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the tailer meets the outage
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		var err error
		for attempt := 0; attempt < 100; attempt++ {
			if _, err = coll.InsertOne(t.Context(), bson.D{{Key: "_id", Value: fmt.Sprint("after-", i)}}); err == nil || !mongox.Retryable(err) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if ev := next(t, s); ev.ID.StringValue() != fmt.Sprint("after-", i) {
			t.Fatalf("after the restart got %s, want after-%d", ev.ID, i)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reported) == 0 {
		t.Errorf("the outage was not reported to OnError")
	}
}

func TestOplogFeedFromAnEmptyOplog(t *testing.T) {
	srv := mongotest.NewServer(t)
	client := connect(t, srv.URI(), mongox.ConnectOptions{})
	coll := client.Database("db").Collection("c")
	ns := []Namespace{nsOf(coll)}
	f := newFeed(t, client, Options{})
	p, err := f.Current(t.Context(), ns...)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Timestamp().IsZero() {
		t.Fatalf("Current on an empty oplog = %s, want the zero timestamp", p)
	}
	// Writes happen before anyone subscribes from that position.
	for i := range 3 {
		if _, err := coll.InsertOne(t.Context(), bson.D{{Key: "_id", Value: i}}); err != nil {
			t.Fatal(err)
		}
	}
	s := subscribe(t, f, SubscribeOptions{Namespaces: ns, From: p})
	for i, ev := range collect(t, s, 3) {
		if ev.ID.AsInt64() != int64(i) {
			t.Errorf("event %d is about %s", i, ev.ID)
		}
	}
	// Another feed never saw the oplog empty: it cannot vouch for the
	// position.
	g := newFeed(t, client, Options{})
	if _, err := g.Subscribe(t.Context(), SubscribeOptions{Namespaces: ns, From: p}); !IsExpired(err) {
		t.Errorf("another feed from the empty position: %v, want expiry", err)
	}
}
