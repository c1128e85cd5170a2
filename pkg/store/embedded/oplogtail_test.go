package embedded

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func servedCount(s *Server) int64 { return frontOf(s).served.Load() }

// firstWrite inserts one document into tail.c through the front and
// returns that collection and the oplog, on a client without a timeout.
func firstWrite(t *testing.T, s *Server) (coll, oplog *mongo.Collection) {
	t.Helper()
	c := connect(t, s.URI(), noTimeout)
	coll = c.Database("tail").Collection("c")
	if _, err := coll.InsertOne(testCtx(t), bson.D{{Key: "_id", Value: "first"}}); err != nil {
		t.Fatal(err)
	}
	return coll, c.Database(OplogDatabase).Collection(OplogCollection)
}

// A tailing cursor on the oplog, served by the front, returns exactly the
// entries FerretDB holds from its position on, in order, as they are
// written, and wakes on writes.
func TestOplogTailServedByFront(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	coll, oplog := firstWrite(t, s)
	newest, err := oplog.FindOne(ctx, bson.D{}, options.FindOne().SetSort(bson.D{{Key: "$natural", Value: -1}})).Raw()
	if err != nil {
		t.Fatal(err)
	}
	from := newest.Lookup("ts")
	before := servedCount(s)
	cur, err := oplog.Find(ctx, bson.D{{Key: "ts", Value: bson.D{{Key: "$gte", Value: from}}}},
		options.Find().SetCursorType(options.TailableAwait).SetBatchSize(1).SetMaxAwaitTime(longAwait))
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close(ctx)
	var got []string
	next := func() {
		t.Helper()
		if !cur.Next(ctx) {
			t.Fatalf("cursor ended: %v", cur.Err())
		}
		got = append(got, cur.Current.Lookup("_id").ObjectID().Hex())
	}
	next()
	for i := range 5 {
		go func() {
			time.Sleep(20 * time.Millisecond)
			_, _ = coll.InsertOne(ctx, bson.D{{Key: "_id", Value: fmt.Sprint(i)}})
		}()
		start := time.Now()
		next()
		if waited := time.Since(start); waited > testWait {
			t.Fatalf("entry %d came after %v", i, waited)
		}
	}
	if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "0"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "x", Value: 1}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: "1"}}); err != nil {
		t.Fatal(err)
	}
	next()
	next()
	if servedCount(s) == before {
		t.Fatal("the front did not serve the cursor")
	}

	// The same entries, straight from FerretDB.
	direct, err := directClient(t, s).Database(OplogDatabase).Collection(OplogCollection).Find(ctx, bson.D{{Key: "ts", Value: bson.D{{Key: "$gte", Value: from}}}})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for direct.Next(ctx) {
		want = append(want, direct.Current.Lookup("_id").ObjectID().Hex())
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("tailed %v, FerretDB holds %v", got, want)
	}
}

// A cursor whose position is trimmed away fails with CappedPositionLost.
func TestOplogTailPositionLost(t *testing.T) {
	s := startServer(t, func(o *Options) { o.OplogMaxEntries = 10; o.CleanupInterval = 50 * time.Millisecond })
	ctx := testCtx(t)
	coll, oplog := firstWrite(t, s)
	cur, err := oplog.Find(ctx, bson.D{}, options.Find().SetCursorType(options.TailableAwait).SetBatchSize(1).SetMaxAwaitTime(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close(ctx)
	if !cur.Next(ctx) {
		t.Fatalf("no first entry: %v", cur.Err())
	}
	for i := range 40 {
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(testWait)
	for {
		n, err := oplog.EstimatedDocumentCount(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n <= 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the oplog was not trimmed: %d entries", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for cur.Next(ctx) {
	}
	var ce mongo.CommandError
	if err := cur.Err(); err == nil || !errors.As(err, &ce) || ce.Code != codeCappedPositionLost {
		t.Fatalf("cursor error %v, want CappedPositionLost", err)
	}
}
