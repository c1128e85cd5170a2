package changes

import (
	"context"
	"os"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/capstanhq/capstan/pkg/store/mongo/mongotest"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongox"
)

// replicaSetClient returns a client of the MONGODB_URI server when it is a
// replica set (or sharded cluster); change streams need one, and the
// embedded server has none.
func replicaSetClient(t *testing.T) *mongo.Client {
	t.Helper()
	if os.Getenv(mongotest.EnvURI) == "" {
		t.Skip("change streams need a replica set: set MONGODB_URI to one to run this test")
	}
	c := mongotest.Client(t)
	info, err := mongox.Describe(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	if info.ReplicaSet == "" && !info.Sharded {
		t.Skipf("MONGODB_URI is not a replica set or sharded cluster (FerretDB: %v)", info.FerretDB)
	}
	return c
}

func TestDetectChoosesOplogOnTheEmbeddedServer(t *testing.T) {
	if os.Getenv(mongotest.EnvURI) != "" {
		t.Skip("MONGODB_URI is set: the server is not the embedded one")
	}
	mode, err := Detect(t.Context(), mongotest.Client(t))
	if err != nil || mode != ModeOplog {
		t.Fatalf("Detect = %s, %v; want oplog", mode, err)
	}
	f, err := New(t.Context(), mongotest.Client(t), ModeAuto, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close(context.Background())
	if f.Mode() != ModeOplog {
		t.Errorf("New(auto) made a %s feed", f.Mode())
	}
}

func TestChangeStreamFeed(t *testing.T) {
	client := replicaSetClient(t)
	if mode, err := Detect(t.Context(), client); err != nil || mode != ModeChangeStream {
		t.Fatalf("Detect = %s, %v; want changestream", mode, err)
	}
	db := mongotest.Database(t)
	coll := db.Collection("c")
	if err := db.CreateCollection(t.Context(), "c"); err != nil {
		t.Fatal(err)
	}
	ns := []Namespace{nsOf(coll)}
	f := NewChangeStream(client, Options{})
	t.Cleanup(func() { _ = f.Close(context.Background()) })
	start, err := f.Current(t.Context(), ns...)
	if err != nil {
		t.Fatal(err)
	}
	s := subscribe(t, f, SubscribeOptions{Namespaces: ns, From: start, LookupUpdates: true})
	ctx := t.Context()
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "n", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "a"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "n", Value: 2}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: "a"}}); err != nil {
		t.Fatal(err)
	}
	evs := collect(t, s, 3)
	if evs[0].Op != OpInsert || evs[1].Op != OpUpdate || evs[2].Op != OpDelete {
		t.Fatalf("ops %v", summary(evs))
	}
	if evs[1].Document == nil || evs[1].Document.Lookup("n").AsInt64() < 2 {
		t.Errorf("the update's looked-up document is %s", evs[1].Document)
	}
	// Resume exactly after the first event, from its serialized position.
	p, err := ParsePosition(evs[0].Position.String())
	if err != nil {
		t.Fatal(err)
	}
	r := subscribe(t, f, SubscribeOptions{Namespaces: ns, From: p})
	if got := summary(collect(t, r, 2)); got[0] != summary(evs[1:2])[0] || got[1] != summary(evs[2:3])[0] {
		t.Errorf("resumed after the insert: %v", got)
	}
	// A drop invalidates; the subscription continues after it.
	if err := coll.Drop(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		ev := next(t, s)
		if ev.Op == OpInvalidate {
			break
		}
	}
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "b"}}); err != nil {
		t.Fatal(err)
	}
	for {
		ev := next(t, s)
		if ev.Op == OpInsert {
			if ev.ID.StringValue() != "b" {
				t.Errorf("after the invalidate got %s", ev.ID)
			}
			break
		}
	}
	// An oplog position is refused.
	if _, err := f.Subscribe(ctx, SubscribeOptions{Namespaces: ns, From: OplogPosition(bson.Timestamp{T: 1})}); err == nil {
		t.Errorf("an oplog position was accepted")
	}
}
