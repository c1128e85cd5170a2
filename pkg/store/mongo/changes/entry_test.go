package changes

import (
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

func raw(t *testing.T, d bson.D) bson.Raw {
	t.Helper()
	b, err := bson.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseEntryShapes(t *testing.T) {
	ts := bson.Timestamp{T: 100, I: 3}
	wall := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	base := func(op, ns string, rest ...bson.E) bson.D {
		return append(bson.D{{Key: "op", Value: op}, {Key: "ns", Value: ns}, {Key: "ts", Value: ts}, {Key: "wall", Value: wall}}, rest...)
	}
	doc := bson.D{{Key: "_id", Value: "a/b"}, {Key: "x", Value: 1}}
	cases := []struct {
		name    string
		entry   bson.D
		ops     []Op
		nss     []string
		fullDoc []bool
	}{
		{"insert", base("i", "db.c", bson.E{Key: "o", Value: doc}), []Op{OpInsert}, []string{"db.c"}, []bool{true}},
		{"delete", base("d", "db.c", bson.E{Key: "o", Value: bson.D{{Key: "_id", Value: "a/b"}}}), []Op{OpDelete}, []string{"db.c"}, []bool{false}},
		{"ferretdb update", base("u", "db.c",
			bson.E{Key: "o", Value: bson.D{{Key: "$v", Value: 1}, {Key: "$set", Value: doc}}},
			bson.E{Key: "o2", Value: bson.D{{Key: "_id", Value: "a/b"}}}), []Op{OpUpdate}, []string{"db.c"}, []bool{true}},
		{"mongodb diff update", base("u", "db.c",
			bson.E{Key: "o", Value: bson.D{{Key: "$v", Value: 2}, {Key: "diff", Value: bson.D{{Key: "u", Value: bson.D{{Key: "x", Value: 2}}}}}}},
			bson.E{Key: "o2", Value: bson.D{{Key: "_id", Value: "a/b"}}}), []Op{OpUpdate}, []string{"db.c"}, []bool{false}},
		{"mongodb $set update", base("u", "db.c",
			bson.E{Key: "o", Value: bson.D{{Key: "$set", Value: bson.D{{Key: "x", Value: 2}}}}},
			bson.E{Key: "o2", Value: bson.D{{Key: "_id", Value: "a/b"}}}), []Op{OpUpdate}, []string{"db.c"}, []bool{false}},
		{"replacement", base("u", "db.c",
			bson.E{Key: "o", Value: doc},
			bson.E{Key: "o2", Value: bson.D{{Key: "_id", Value: "a/b"}}}), []Op{OpReplace}, []string{"db.c"}, []bool{true}},
		{"noop", base("n", "", bson.E{Key: "o", Value: bson.D{{Key: "msg", Value: "periodic noop"}}}), nil, nil, nil},
		{"create collection", base("c", "db.$cmd", bson.E{Key: "o", Value: bson.D{{Key: "create", Value: "c"}}}), nil, nil, nil},
		{"drop", base("c", "db.$cmd", bson.E{Key: "o", Value: bson.D{{Key: "drop", Value: "c"}}}), []Op{OpInvalidate}, []string{"db.c"}, []bool{false}},
		{"dropDatabase", base("c", "db.$cmd", bson.E{Key: "o", Value: bson.D{{Key: "dropDatabase", Value: 1}}}), []Op{OpInvalidate}, []string{"db."}, []bool{false}},
		{"rename", base("c", "db.$cmd", bson.E{Key: "o", Value: bson.D{{Key: "renameCollection", Value: "db.a"}, {Key: "to", Value: "db.b"}}}),
			[]Op{OpInvalidate, OpInvalidate}, []string{"db.a", "db.b"}, []bool{false, false}},
		{"transaction", base("c", "admin.$cmd", bson.E{Key: "o", Value: bson.D{{Key: "applyOps", Value: bson.A{
			bson.D{{Key: "op", Value: "i"}, {Key: "ns", Value: "db.c"}, {Key: "o", Value: doc}},
			bson.D{{Key: "op", Value: "n"}, {Key: "ns", Value: ""}, {Key: "o", Value: bson.D{}}},
			bson.D{{Key: "op", Value: "d"}, {Key: "ns", Value: "db.d"}, {Key: "o", Value: bson.D{{Key: "_id", Value: 7}}}},
			bson.D{{Key: "op", Value: "u"}, {Key: "ns", Value: "db.c"}, {Key: "o", Value: bson.D{{Key: "$v", Value: 2}, {Key: "diff", Value: bson.D{}}}},
				{Key: "o2", Value: bson.D{{Key: "_id", Value: "a/b"}}}},
		}}}}), []Op{OpInsert, OpDelete, OpUpdate}, []string{"db.c", "db.d", "db.c"}, []bool{true, false, false}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := parseEntry(raw(t, c.entry))
			if err != nil {
				t.Fatal(err)
			}
			if e.ts != ts {
				t.Errorf("ts = %v", e.ts)
			}
			if len(e.events) != len(c.ops) {
				t.Fatalf("%d events, want %d: %+v", len(e.events), len(c.ops), e.events)
			}
			for i, ev := range e.events {
				if ev.Op != c.ops[i] || ev.Namespace.String() != c.nss[i] || (ev.Document != nil) != c.fullDoc[i] {
					t.Errorf("event %d = %s %s doc %v, want %s %s doc %v", i, ev.Op, ev.Namespace, ev.Document != nil, c.ops[i], c.nss[i], c.fullDoc[i])
				}
				if !ev.Time.Equal(wall) {
					t.Errorf("event %d time %v", i, ev.Time)
				}
				if ev.Op != OpInvalidate && ev.ID.Type == 0 {
					t.Errorf("event %d has no _id", i)
				}
				wantSub := uint32(i + 1)
				if i == len(e.events)-1 {
					wantSub = 0
				}
				if ev.Position.ts != ts || ev.Position.sub != wantSub {
					t.Errorf("event %d position %s, want sub %d", i, ev.Position, wantSub)
				}
			}
		})
	}
}

func TestParseEntryRejectsMalformed(t *testing.T) {
	for name, d := range map[string]bson.D{
		"no ts":        {{Key: "op", Value: "i"}, {Key: "ns", Value: "db.c"}, {Key: "o", Value: bson.D{{Key: "_id", Value: 1}}}},
		"ts not a ts":  {{Key: "op", Value: "i"}, {Key: "ns", Value: "db.c"}, {Key: "ts", Value: 5}},
		"bad ns":       {{Key: "op", Value: "i"}, {Key: "ns", Value: "nodot"}, {Key: "ts", Value: bson.Timestamp{T: 1}}, {Key: "o", Value: bson.D{{Key: "_id", Value: 1}}}},
		"insert no id": {{Key: "op", Value: "i"}, {Key: "ns", Value: "db.c"}, {Key: "ts", Value: bson.Timestamp{T: 1}}, {Key: "o", Value: bson.D{}}},
		"update no o2": {{Key: "op", Value: "u"}, {Key: "ns", Value: "db.c"}, {Key: "ts", Value: bson.Timestamp{T: 1}}, {Key: "o", Value: bson.D{{Key: "$set", Value: bson.D{}}}}},
		"unknown op":   {{Key: "op", Value: "z"}, {Key: "ns", Value: "db.c"}, {Key: "ts", Value: bson.Timestamp{T: 1}}, {Key: "o", Value: bson.D{}}},
	} {
		if _, err := parseEntry(raw(t, d)); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
}
