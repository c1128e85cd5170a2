package embedded

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
)

// sjsonCorpus is documents of every type FerretDB stores, nested (as
// deep as it allows: no array directly in an array).
func sjsonCorpus(r *rand.Rand, n int) []bson.D {
	docs := []bson.D{
		{{Key: "_id", Value: "scalars"}, {Key: "d", Value: 1.5}, {Key: "dneg0", Value: math.Copysign(0, -1)}, {Key: "dbig", Value: 1e300},
			{Key: "dsmall", Value: 5e-324}, {Key: "dint", Value: 3.0}, {Key: "s", Value: "héllo <&> \"q\" \\ \u2028 \x01"},
			{Key: "empty", Value: ""}, {Key: "t", Value: true}, {Key: "f", Value: false}, {Key: "null", Value: nil},
			{Key: "i32", Value: int32(math.MinInt32)}, {Key: "i64", Value: int64(math.MaxInt64)}, {Key: "i64neg", Value: int64(math.MinInt64)},
			{Key: "date", Value: bson.DateTime(-62135596800000)}, {Key: "now", Value: bson.NewDateTimeFromTime(time.Now())},
			{Key: "ts", Value: bson.Timestamp{T: math.MaxUint32, I: 7}}, {Key: "oid", Value: bson.NewObjectID()},
			{Key: "bin", Value: bson.Binary{Subtype: 0, Data: []byte{0, 1, 2, 255}}}, {Key: "uuid", Value: bson.Binary{Subtype: 4, Data: bytes.Repeat([]byte{9}, 16)}},
			{Key: "binEmpty", Value: bson.Binary{Subtype: 0x80, Data: []byte{}}},
			{Key: "re", Value: bson.Regex{Pattern: `^a.*"b"$`, Options: "im"}}, {Key: "reNoOpts", Value: bson.Regex{Pattern: "x"}}},
		{{Key: "_id", Value: bson.NewObjectID()}, {Key: "nested", Value: bson.D{{Key: "a", Value: bson.D{{Key: "b", Value: bson.A{int32(1), "two", bson.D{}, bson.D{{Key: "in", Value: bson.A{}}}, nil}}}}}},
			{Key: "emptyDoc", Value: bson.D{}}, {Key: "emptyArr", Value: bson.A{}}, {Key: "z", Value: 1}, {Key: "a", Value: 2}, {Key: "m", Value: 3}},
		{{Key: "_id", Value: int32(42)}, {Key: "unicode ключ", Value: "значение"}, {Key: "deep", Value: bson.A{bson.D{{Key: "a", Value: bson.A{bson.D{{Key: "b", Value: int64(1)}}}}}}}},
		{{Key: "_id", Value: int64(1) << 40}},
		{{Key: "_id", Value: 2.5}, {Key: "x", Value: bson.D{{Key: "y", Value: bson.Binary{Subtype: 5, Data: []byte("md5md5md5md5md5!")}}}}},
	}
	for i := range n {
		docs = append(docs, bson.D{{Key: "_id", Value: fmt.Sprintf("random-%d", i)}, {Key: "v", Value: randomValue(r, 3)}, {Key: "w", Value: randomDoc(r, 3)}})
	}
	return docs
}

func randomDoc(r *rand.Rand, depth int) bson.D {
	d := bson.D{}
	for i := range r.IntN(5) {
		d = append(d, bson.E{Key: fmt.Sprintf("k%d_%d", i, r.IntN(100)), Value: randomValue(r, depth-1)})
	}
	return d
}

func randomValue(r *rand.Rand, depth int) any {
	n := 13
	if depth <= 0 {
		n = 11
	}
	switch r.IntN(n) {
	case 0:
		return r.NormFloat64() * math.Pow(10, float64(r.IntN(40)-20))
	case 1:
		return strings.Repeat(string(rune('a'+r.IntN(26))), r.IntN(10)) + "\t\n☃"
	case 2:
		return r.IntN(2) == 0
	case 3:
		return nil
	case 4:
		return int32(r.Uint32())
	case 5:
		return int64(r.Uint64())
	case 6:
		return bson.DateTime(r.Int64N(1 << 45))
	case 7:
		return bson.Timestamp{T: r.Uint32(), I: r.Uint32()}
	case 8:
		return bson.NewObjectID()
	case 9:
		b := make([]byte, r.IntN(20))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return bson.Binary{Subtype: byte(r.IntN(9)), Data: b}
	case 10:
		return bson.Regex{Pattern: "p" + fmt.Sprint(r.IntN(100)), Options: []string{"", "i", "ms", "imsx"}[r.IntN(4)]}
	case 11:
		return randomDoc(r, depth)
	default:
		a := bson.A{}
		for range r.IntN(4) {
			v := randomValue(r, depth-1)
			if _, nested := v.(bson.A); nested { // FerretDB stores no arrays in arrays
				v = randomDoc(r, depth-1)
			}
			a = append(a, v)
		}
		return a
	}
}

// storedRows returns every row of db.coll's table as FerretDB stored it.
func storedRows(t testing.TB, s *Server, db, coll string) [][]byte {
	t.Helper()
	x := frontOf(s).ids
	x.mu.Lock()
	defer x.mu.Unlock()
	c := x.ensureLocked(testCtx(t), db, coll)
	if c == nil {
		t.Fatalf("no table for %s.%s", db, coll)
	}
	h, err := x.open(db)
	if err != nil || h == nil {
		t.Fatalf("open %s: %v", db, err)
	}
	rows, err := h.QueryContext(testCtx(t), `SELECT _ferretdb_sjson FROM `+sqlIdent(c.table)+` ORDER BY rowid`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// The front's conversion of stored documents gives, byte for byte, the
// BSON FerretDB returns for them: for documents of every type, and for
// the oplog entries their writes made.
func TestSJSONMatchesFerretDB(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	direct := directClient(t, s)
	coll := connect(t, s.URI()).Database("sjson").Collection("c")
	docs := sjsonCorpus(rand.New(rand.NewPCG(1, 2)), 300)
	for _, d := range docs {
		if _, err := coll.InsertOne(ctx, d); err != nil {
			t.Fatalf("insert %v: %v", d, err)
		}
	}
	if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "scalars"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "added", Value: bson.A{1.25, "x"}}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: int32(42)}}); err != nil {
		t.Fatal(err)
	}
	check := func(db, name string, want int) {
		t.Helper()
		stored := storedRows(t, s, db, name)
		if len(stored) < want {
			t.Fatalf("%s.%s: %d rows, want at least %d", db, name, len(stored), want)
		}
		for _, row := range stored {
			got, err := sjsonToBSON(row)
			if err != nil {
				t.Fatalf("convert %s: %v", row, err)
			}
			id := got.Lookup("_id")
			back, err := direct.Database(db).Collection(name).FindOne(ctx, bson.D{{Key: "_id", Value: bson.RawValue{Type: bson.Type(id.Type), Value: id.Data}}}).Raw()
			if err != nil {
				t.Fatalf("find %v: %v", id, err)
			}
			if !bytes.Equal(got, back) {
				t.Fatalf("converted\n%v\nFerretDB returns\n%v\nstored %s", bson.Raw(got), back, row)
			}
		}
	}
	check("sjson", "c", len(docs)-1)
	check(OplogDatabase, OplogCollection, len(docs)+2)
}

// What is not a stored document is an error, never a wrong document.
func TestSJSONRejectsWhatItDoesNotKnow(t *testing.T) {
	for _, in := range []string{
		``,
		`{}`,
		`{"a":1}`,
		`{"$s":{"p":{"a":{"t":"int"}},"$k":["a"]}}`,
		`{"$s":{"p":{"a":{"t":"int"}},"$k":["a","b"]},"a":1}`,
		`{"$s":{"p":{"a":{"t":"decimal"}},"$k":["a"]},"a":1}`,
		`{"$s":{"p":{"a":{"t":"int"}},"$k":["a"]},"a":"x"}`,
		`{"$s":{"p":{"a":{"t":"int"}},"$k":["a"]},"a":4294967296}`,
		`{"$s":{"p":{"a":{"t":"objectId"}},"$k":["a"]},"a":"abc"}`,
		`{"$s":{"p":{"a":{"t":"binData"}},"$k":["a"]},"a":"AAE="}`,
		`{"$s":{"p":{"a":{"t":"regex"}},"$k":["a"]},"a":"x"}`,
		`{"$s":{"p":{"a":{"t":"array","i":[{"t":"int"}]}},"$k":["a"]},"a":[1,2]}`,
		`{"$s":{"p":{"a":{"t":"object"}},"$k":["a"]},"a":{"b":1}}`,
		`{"$s":{"p":{},"$k":["a"]},"a":1}`,
		`{"$s":{"p":{"a":{"t":"int"}},"$k":["a"]},"a":1} x`,
		`{"$s":{"p":{"a":{"t":"int"}},"$k":["a"],"x":1},"a":1}`,
		`{"$s":{"p":{"a":{"t":"int","x":1}},"$k":["a"]},"a":1}`,
		`{"$s":{"p":{"a":{"t":"int"}},"$k":["a"]},"a":+1}`,
		`{"$s":{"p":{"a":{"t":"double"}},"$k":["a"]},"a":Infinity}`,
		`{"$s":{"p":{"a":{"t":"double"}},"$k":["a"]},"a":1e400}`,
		`{"$s":{"p":{"a":{"t":"date"}},"$k":["a"]},"a":"2026-01-01"}`,
		`{"$s":{"p":{"a":{"t":"long"}},"$k":["a"]},"a":1.5}`,
		`{"$s":{"p":{"a":{"t":"timestamp"}},"$k":["a"]},"a":-1}`,
		`{"$s":{"p":{"a":{"t":"bool"}},"$k":["a"]},"a":tru}`,
		`{"$s":{"p":{"a":{"t":"string"}},"$k":["a"]},"a":"unterminated}`,
		`{"$s":{"p":{"a":{"t":"string"}},"$k":["a"]},"a":"bad \x escape"}`,
		`{"$s":{"p":{"a":{"t":"binData","s":2}},"$k":["a"]},"a":"not base64!"}`,
		`{"$s":{"p":{"a":{"t":"binData","s":256}},"$k":["a"]},"a":"AAE="}`,
		`{"$s":{"p":{"a":{"t":"object","$s":{"p":{"b":{"t":"int"}},"$k":["b"]}}},"$k":["a"]},"a":{"b":1}`,
	} {
		if d, err := sjsonToBSON([]byte(in)); err == nil {
			t.Errorf("%s: converted to %v, want an error", in, bson.Raw(d))
		}
	}
	// The smallest valid documents, escapes, and fields out of the
	// schema's order.
	for in, want := range map[string]bsoncore.Document{
		`{"$s":{"$k":["a\"b","c"],"p":{"c":{"t":"string"},"a\"b":{"t":"int"}}},"c":"x\u003cy\n","a\"b":-7}`: bsoncore.NewDocumentBuilder().
			AppendInt32("a\"b", -7).AppendString("c", "x<y\n").Build(),
		`{"$s":{"p":{},"$k":[]}}`:                             bsoncore.NewDocumentBuilder().Build(),
		`{"$s":{"p":{"a":{"t":"null"}},"$k":["a"]},"a":null}`: bsoncore.NewDocumentBuilder().AppendNull("a").Build(),
	} {
		got, err := sjsonToBSON([]byte(in))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v, %v; want %v", in, bson.Raw(got), err, bson.Raw(want))
		}
	}
}

// A read by _id from SQLite finds what FerretDB finds: strings of any
// characters, an ObjectID (and not for the string of its hex, which
// FerretDB's unique index keeps out of the collection), nothing for a
// missing _id; it declines _id types FerretDB does not look up in SQLite.
func TestStoredByIDFindsWhatFerretDBFinds(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t)
	coll := connect(t, s.URI()).Database("byid").Collection("c")
	oid := bson.NewObjectID()
	ids := []any{"plain", `q"uote`, `back\slash`, "<&>", "line\u2028sep", "tab\tnl\n", "ключ/名前", "\x01ctl", "", oid}
	for i, id := range ids {
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "n", Value: i}}); err != nil {
			t.Fatalf("insert %q: %v", id, err)
		}
	}
	x := frontOf(s).ids
	value := func(v any) bsoncore.Value {
		typ, data, err := bson.MarshalValue(v)
		if err != nil {
			t.Fatal(err)
		}
		return bsoncore.Value{Type: bsoncore.Type(typ), Data: data}
	}
	for i, id := range ids {
		doc, ok := x.storedByID(ctx, "byid", "c", value(id))
		if !ok || doc == nil {
			t.Fatalf("%q: doc %v, ok %v", id, doc, ok)
		}
		if n := doc.Lookup("n").Int32(); n != int32(i) {
			t.Fatalf("%q: found document %d, want %d", id, n, i)
		}
	}
	for _, id := range []string{"missing", oid.Hex()} {
		if doc, ok := x.storedByID(ctx, "byid", "c", value(id)); !ok || doc != nil {
			t.Fatalf("%q: doc %v, ok %v", id, doc, ok)
		}
		if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Err(); err != mongo.ErrNoDocuments {
			t.Fatalf("FerretDB finds %q: %v", id, err)
		}
	}
	if _, ok := x.storedByID(ctx, "byid", "c", value(int32(1))); ok {
		t.Fatal("an int _id was answered from SQLite")
	}
	if _, ok := x.storedByID(ctx, "byid", "nosuch", value("plain")); ok {
		t.Fatal("a collection with no table was answered")
	}
}

// BenchmarkSJSONToBSON converts a stored document shaped like the
// resource store's.
func BenchmarkSJSONToBSON(b *testing.B) {
	s := startServer(b)
	coll := connect(b, s.URI()).Database("bench").Collection("sjson")
	if _, err := coll.InsertOne(context.Background(), resourceDoc("ns/x", 1)); err != nil {
		b.Fatal(err)
	}
	stored := storedRows(b, s, "bench", "sjson")[0]
	b.SetBytes(int64(len(stored)))
	for b.Loop() {
		if _, err := sjsonToBSON(stored); err != nil {
			b.Fatal(err)
		}
	}
}
