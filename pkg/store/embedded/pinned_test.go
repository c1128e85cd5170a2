package embedded

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
)

// directURI is the URI of FerretDB's own socket, past the front.
func directURI(s *Server) string {
	s.mu.Lock()
	sock := s.run.sockPath
	s.mu.Unlock()
	return "mongodb://" + strings.ReplaceAll(sock, "/", "%2F") + "/?directConnection=true"
}

// directClient connects to FerretDB's own socket, past the front.
func directClient(t testing.TB, s *Server) *mongo.Client {
	t.Helper()
	return connect(t, directURI(s))
}

// pinAlways makes the front split conditional writes in collections of
// any size.
func pinAlways(s *Server) { frontOf(s).pinMin.Store(0) }

func pinnedCount(s *Server) int64 { return frontOf(s).pinned.Load() }

// matcherDocs are documents with the shapes the matcher meets and a few
// it must refuse (arrays).
func matcherDocs() []bson.D {
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return []bson.D{
		{{Key: "_id", Value: "d0"}, {Key: "n", Value: int32(1)}, {Key: "s", Value: "abc"}, {Key: "b", Value: bson.D{{Key: "c", Value: int64(1)}, {Key: "e", Value: "x"}}}, {Key: "t", Value: bson.DateTime(when.UnixMilli())}, {Key: "z", Value: nil}},
		{{Key: "_id", Value: "d1"}, {Key: "n", Value: int64(2)}, {Key: "s", Value: "abd"}, {Key: "b", Value: bson.D{{Key: "e", Value: "x"}, {Key: "c", Value: int64(1)}}}, {Key: "f", Value: true}},
		{{Key: "_id", Value: "d2"}, {Key: "n", Value: 2.5}, {Key: "s", Value: ""}, {Key: "b", Value: "scalar"}, {Key: "t", Value: bson.DateTime(when.Add(time.Hour).UnixMilli())}},
		{{Key: "_id", Value: "d3"}, {Key: "n", Value: 1.0}, {Key: "b", Value: bson.D{{Key: "c", Value: int32(1)}}}, {Key: "f", Value: false}, {Key: "z", Value: int32(0)}},
		{{Key: "_id", Value: "d4"}, {Key: "n", Value: "1"}, {Key: "s", Value: int32(7)}, {Key: "arr", Value: bson.A{int32(1), int32(2)}}, {Key: "b", Value: bson.D{{Key: "c", Value: bson.A{int32(1)}}}}},
		{{Key: "_id", Value: "d5"}, {Key: "b", Value: bson.D{}}},
	}
}

// randomCondition returns one filter entry from the grammar of the
// matcher, and some outside it.
func randomCondition(r *rand.Rand) bson.E {
	paths := []string{"n", "s", "b", "b.c", "b.e", "b.missing", "s.x", "t", "f", "z", "missing", "arr", "b.c.d"}
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	values := []any{
		int32(1), int64(1), 1.0, 2.5, int64(2), int32(0), "abc", "abd", "", "1", true, false, nil,
		bson.DateTime(when.UnixMilli()), bson.DateTime(when.Add(time.Hour).UnixMilli()),
		bson.D{{Key: "c", Value: int64(1)}, {Key: "e", Value: "x"}}, bson.D{{Key: "c", Value: 1.0}, {Key: "e", Value: "x"}},
		bson.D{{Key: "e", Value: "x"}, {Key: "c", Value: int64(1)}}, bson.D{{Key: "c", Value: int32(1)}}, bson.D{},
		bson.A{int32(1), int32(2)},
	}
	ops := []string{"", "", "$eq", "$ne", "$exists", "$gt", "$gte", "$lt", "$lte", "$in"}
	path := paths[r.IntN(len(paths))]
	v := values[r.IntN(len(values))]
	switch op := ops[r.IntN(len(ops))]; op {
	case "":
		return bson.E{Key: path, Value: v}
	case "$exists":
		return bson.E{Key: path, Value: bson.D{{Key: op, Value: r.IntN(2) == 0}}}
	case "$in":
		return bson.E{Key: path, Value: bson.D{{Key: op, Value: bson.A{v}}}}
	default:
		return bson.E{Key: path, Value: bson.D{{Key: op, Value: v}}}
	}
}

// The front's matcher agrees with the backend on every filter it judges,
// and judges most of them.
func TestMatchFilterAgreesWithBackend(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	coll := directClient(t, s).Database("m").Collection("docs")
	docs := matcherDocs()
	var raws []bsoncore.Document
	for _, d := range docs {
		if _, err := coll.InsertOne(ctx, d); err != nil {
			t.Fatal(err)
		}
		raw, err := bson.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		raws = append(raws, raw)
	}
	r := rand.New(rand.NewPCG(1, 2))
	judged, total := 0, 0
	for range 2000 {
		i := r.IntN(len(docs))
		id := docs[i][0].Value.(string)
		filter := bson.D{{Key: "_id", Value: id}}
		for range 1 + r.IntN(3) {
			if c := randomCondition(r); !slices.ContainsFunc(filter, func(e bson.E) bool { return e.Key == c.Key }) {
				filter = append(filter, c)
			}
		}
		fraw, err := bson.Marshal(filter)
		if err != nil {
			t.Fatal(err)
		}
		total++
		v := matchFilter(raws[i], fraw, "_id")
		if v == unsupported {
			continue
		}
		judged++
		cur, err := coll.Find(ctx, filter)
		if err != nil {
			t.Fatalf("backend on %v: %v", filter, err)
		}
		var found []bson.Raw
		if err := cur.All(ctx, &found); err != nil {
			t.Fatalf("backend on %v: %v", filter, err)
		}
		n := len(found)
		if (n == 1) != (v == matched) {
			t.Errorf("filter %v on %v: matcher says %v, backend found %d", filter, docs[i], v == matched, n)
		}
	}
	if judged < total/2 {
		t.Fatalf("the matcher judged only %d of %d filters", judged, total)
	}
	t.Logf("judged %d of %d filters", judged, total)
}

// Conditional writes through the front give the same results, replies
// and stored documents as the same writes straight to the backend, and
// the front splits them by _id.
func TestPinnedWritesMatchTheBackend(t *testing.T) {
	s := startServer(t)
	pinAlways(s)
	ctx := testCtx(t)
	viaFront := connect(t, s.URI()).Database("p").Collection("c")
	direct := directClient(t, s).Database("p").Collection("d")
	type result struct {
		matched, modified, deleted int64
		doc                        string
		err                        string
	}
	ops := []struct {
		name   string
		pinned bool
		run    func(c *mongo.Collection) result
	}{
		{"replace, filter matches", true, func(c *mongo.Collection) result {
			res, err := c.ReplaceOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "v", Value: int32(1)}, {Key: "m.rv", Value: "7"}}, bson.D{{Key: "v", Value: int32(2)}, {Key: "m", Value: bson.D{{Key: "rv", Value: "8"}}}})
			return result{matched: res.MatchedCount, modified: res.ModifiedCount, err: errString(err)}
		}},
		{"replace, stale version", true, func(c *mongo.Collection) result {
			res, err := c.ReplaceOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "m.rv", Value: "7"}}, bson.D{{Key: "v", Value: int32(9)}})
			return result{matched: res.MatchedCount, modified: res.ModifiedCount, err: errString(err)}
		}},
		{"replace, missing document", true, func(c *mongo.Collection) result {
			res, err := c.ReplaceOne(ctx, bson.D{{Key: "_id", Value: "nope"}, {Key: "m.rv", Value: "1"}}, bson.D{{Key: "v", Value: int32(9)}})
			return result{matched: res.MatchedCount, modified: res.ModifiedCount, err: errString(err)}
		}},
		{"update $set with $exists", true, func(c *mongo.Collection) result {
			res, err := c.UpdateOne(ctx, bson.D{{Key: "_id", Value: "b"}, {Key: "gone", Value: bson.D{{Key: "$exists", Value: false}}}}, bson.D{{Key: "$set", Value: bson.D{{Key: "w", Value: "x"}}}})
			return result{matched: res.MatchedCount, modified: res.ModifiedCount, err: errString(err)}
		}},
		{"findOneAndUpdate, matches", true, func(c *mongo.Collection) result {
			raw, err := c.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: "b"}, {Key: "n", Value: bson.D{{Key: "$lte", Value: int64(5)}}}},
				bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: int32(1)}}}}, options.FindOneAndUpdate().SetReturnDocument(options.After)).Raw()
			return result{doc: docString(raw), err: errString(err)}
		}},
		{"findOneAndUpdate, misses", true, func(c *mongo.Collection) result {
			raw, err := c.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: "b"}, {Key: "n", Value: bson.D{{Key: "$gt", Value: int64(5)}}}},
				bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: int32(1)}}}}).Raw()
			return result{doc: docString(raw), err: errString(err)}
		}},
		{"findOneAndDelete, misses", true, func(c *mongo.Collection) result {
			raw, err := c.FindOneAndDelete(ctx, bson.D{{Key: "_id", Value: "b"}, {Key: "n", Value: int32(0)}}).Raw()
			return result{doc: docString(raw), err: errString(err)}
		}},
		{"delete, misses", true, func(c *mongo.Collection) result {
			res, err := c.DeleteOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "v", Value: int32(1)}})
			return result{deleted: res.DeletedCount, err: errString(err)}
		}},
		{"delete, matches", true, func(c *mongo.Collection) result {
			res, err := c.DeleteOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "v", Value: int32(2)}})
			return result{deleted: res.DeletedCount, err: errString(err)}
		}},
		{"findOneAndDelete, matches", true, func(c *mongo.Collection) result {
			raw, err := c.FindOneAndDelete(ctx, bson.D{{Key: "_id", Value: "b"}, {Key: "w", Value: "x"}}).Raw()
			return result{doc: docString(raw), err: errString(err)}
		}},
		{"upsert is forwarded", false, func(c *mongo.Collection) result {
			res, err := c.ReplaceOne(ctx, bson.D{{Key: "_id", Value: "u"}, {Key: "v", Value: int32(1)}}, bson.D{{Key: "v", Value: int32(1)}}, options.Replace().SetUpsert(true))
			return result{matched: res.MatchedCount, modified: res.ModifiedCount, err: errString(err)}
		}},
		{"$in is forwarded", false, func(c *mongo.Collection) result {
			res, err := c.UpdateOne(ctx, bson.D{{Key: "_id", Value: "u"}, {Key: "v", Value: bson.D{{Key: "$in", Value: bson.A{int32(1)}}}}}, bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: int32(3)}}}})
			return result{matched: res.MatchedCount, modified: res.ModifiedCount, err: errString(err)}
		}},
	}
	for _, c := range []*mongo.Collection{viaFront, direct} {
		if _, err := c.InsertMany(ctx, []any{
			bson.D{{Key: "_id", Value: "a"}, {Key: "v", Value: int32(1)}, {Key: "m", Value: bson.D{{Key: "rv", Value: "7"}}}},
			bson.D{{Key: "_id", Value: "b"}, {Key: "n", Value: int64(3)}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	readsBefore := frontOf(s).readsFromSQLite.Load()
	for _, op := range ops {
		before := pinnedCount(s)
		got, want := op.run(viaFront), op.run(direct)
		if got != want {
			t.Errorf("%s: through the front %+v, straight to the backend %+v", op.name, got, want)
		}
		if split := pinnedCount(s) > before; split != op.pinned {
			t.Errorf("%s: split by _id = %v, want %v", op.name, split, op.pinned)
		}
	}
	all := func(c *mongo.Collection) string {
		cur, err := c.Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
		if err != nil {
			t.Fatal(err)
		}
		var out []map[string]any // field order is the backend's business (its upserts vary it)
		if err := cur.All(ctx, &out); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(out)
	}
	if a, b := all(viaFront), all(direct); a != b {
		t.Fatalf("stored through the front %s, straight %s", a, b)
	}
	if frontOf(s).readsFromSQLite.Load() == readsBefore {
		t.Fatal("no pinned write read its document from SQLite")
	}
}

// The reply the front makes up when nothing matched is the backend's, to
// the byte, for each command, with the statements in the body.
func TestPinnedNoMatchReplies(t *testing.T) {
	s := startServer(t)
	pinAlways(s)
	ctx := testCtx(t)
	front, direct := connect(t, s.URI()).Database("rf"), directClient(t, s).Database("rd")
	for _, db := range []*mongo.Database{front, direct} {
		if _, err := db.Collection("c").InsertOne(ctx, bson.D{{Key: "_id", Value: "x"}, {Key: "v", Value: int32(1)}}); err != nil {
			t.Fatal(err)
		}
	}
	miss := bson.D{{Key: "_id", Value: "x"}, {Key: "v", Value: int32(2)}}
	for _, cmd := range []bson.D{
		{{Key: "update", Value: "c"}, {Key: "updates", Value: bson.A{bson.D{{Key: "q", Value: miss}, {Key: "u", Value: bson.D{{Key: "v", Value: int32(3)}}}}}}},
		{{Key: "delete", Value: "c"}, {Key: "deletes", Value: bson.A{bson.D{{Key: "q", Value: miss}, {Key: "limit", Value: int32(1)}}}}},
		{{Key: "findAndModify", Value: "c"}, {Key: "query", Value: miss}, {Key: "update", Value: bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: int32(3)}}}}}},
		{{Key: "findAndModify", Value: "c"}, {Key: "query", Value: miss}, {Key: "remove", Value: true}},
	} {
		before := pinnedCount(s)
		got, err := front.RunCommand(ctx, cmd).Raw()
		if err != nil {
			t.Fatal(err)
		}
		want, err := direct.RunCommand(ctx, cmd).Raw()
		if err != nil {
			t.Fatal(err)
		}
		if pinnedCount(s) == before {
			t.Errorf("%v was not split by _id", cmd[0])
		}
		if string(got) != string(want) {
			t.Errorf("%v: front replied %v, backend %v", cmd[0], got, want)
		}
	}
}

// Concurrent compare-and-swap increments through the front lose nothing:
// each version is won once.
func TestPinnedCompareAndSwapUnderContention(t *testing.T) {
	s := startServer(t)
	pinAlways(s)
	ctx := testCtx(t)
	coll := connect(t, s.URI()).Database("cas").Collection("c")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "k"}, {Key: "v", Value: int64(0)}, {Key: "pad", Value: "p"}}); err != nil {
		t.Fatal(err)
	}
	before := pinnedCount(s)
	const workers, rounds = 8, 25
	var mu sync.Mutex
	wins := map[int64]int{}
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				var cur struct {
					V int64 `bson:"v"`
				}
				if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "k"}}).Decode(&cur); err != nil {
					errc <- err
					return
				}
				res, err := coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: "k"}, {Key: "v", Value: cur.V}},
					bson.D{{Key: "v", Value: cur.V + 1}, {Key: "pad", Value: "p"}})
				if err != nil {
					errc <- err
					return
				}
				if res.MatchedCount == 1 {
					mu.Lock()
					wins[cur.V]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	var final struct {
		V int64 `bson:"v"`
	}
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "k"}}).Decode(&final); err != nil {
		t.Fatal(err)
	}
	total := 0
	for v, n := range wins {
		if n != 1 {
			t.Errorf("version %d won %d times", v, n)
		}
		total += n
	}
	if int64(total) != final.V {
		t.Fatalf("%d successful swaps, final value %d: an update was lost", total, final.V)
	}
	if pinnedCount(s)-before < workers*rounds {
		t.Fatalf("only %d of %d swaps were split by _id", pinnedCount(s)-before, workers*rounds)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	if errors.Is(err, mongo.ErrNoDocuments) {
		return "no documents"
	}
	return err.Error()
}

func docString(raw bson.Raw) string {
	if raw == nil {
		return ""
	}
	return raw.String()
}

// Small collections are left to the backend, whose scan of a few
// documents costs less than the split's extra read; large ones are split.
func TestPinnedOnlyLargeCollections(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	db := connect(t, s.URI()).Database("size")
	small, large := db.Collection("small"), db.Collection("large")
	docs := func(n int) []any {
		out := make([]any, n)
		for i := range out {
			out[i] = bson.D{{Key: "_id", Value: fmt.Sprintf("k%04d", i)}, {Key: "v", Value: int32(0)}}
		}
		return out
	}
	if _, err := small.InsertMany(ctx, docs(3)); err != nil {
		t.Fatal(err)
	}
	if _, err := large.InsertMany(ctx, docs(defaultPinMin*4)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		coll   *mongo.Collection
		pinned bool
	}{{small, false}, {large, true}} {
		before := pinnedCount(s)
		res, err := c.coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: "k0001"}, {Key: "v", Value: int32(0)}}, bson.D{{Key: "v", Value: int32(1)}})
		if err != nil || res.MatchedCount != 1 {
			t.Fatalf("%s: %v, matched %d", c.coll.Name(), err, res.MatchedCount)
		}
		if split := pinnedCount(s) > before; split != c.pinned {
			t.Errorf("%s: split by _id = %v, want %v", c.coll.Name(), split, c.pinned)
		}
	}
}
