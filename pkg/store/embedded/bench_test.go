package embedded

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// BenchmarkFindOneAndUpdate measures one findOneAndUpdate round trip
// through the front and directly to FerretDB's socket.
func BenchmarkFindOneAndUpdate(b *testing.B) {
	s := startServer(b, func(o *Options) { o.CleanupInterval = -1 })
	direct := directURI(s)
	for _, bc := range []struct{ name, uri string }{{"front", s.URI()}, {"direct", direct}} {
		b.Run(bc.name, func(b *testing.B) {
			c := connect(b, bc.uri)
			ctx := context.Background()
			coll := c.Database("bench").Collection(bc.name)
			if _, err := coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "v", Value: 0}},
				options.Replace().SetUpsert(true)); err != nil {
				b.Fatal(err)
			}
			upd := bson.D{{Key: "$inc", Value: bson.D{{Key: "v", Value: 1}}}}
			opts := options.FindOneAndUpdate().SetReturnDocument(options.After)
			for b.Loop() {
				if err := coll.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: 1}}, upd, opts).Err(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFindOne is the same comparison for a read.
func BenchmarkFindOne(b *testing.B) {
	s := startServer(b, func(o *Options) { o.CleanupInterval = -1 })
	direct := directURI(s)
	for _, bc := range []struct{ name, uri string }{{"front", s.URI()}, {"direct", direct}} {
		b.Run(bc.name, func(b *testing.B) {
			c := connect(b, bc.uri)
			ctx := context.Background()
			coll := c.Database("bench").Collection(bc.name)
			if _, err := coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "v", Value: 0}},
				options.Replace().SetUpsert(true)); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Err(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCompareAndSwap measures a conditional replace of one document
// by _id and version, as the resource store writes, in collections of
// several sizes: through the front, which splits it by _id from
// defaultPinMin documents on, and directly to FerretDB, which reads the
// whole collection for it.
func BenchmarkCompareAndSwap(b *testing.B) {
	s := startServer(b, func(o *Options) { o.CleanupInterval = -1 })
	for _, size := range []int{10, 1000, 3000} {
		for _, path := range []string{"front", "direct"} {
			b.Run(fmt.Sprintf("docs=%d/%s", size, path), func(b *testing.B) {
				c := connect(b, s.URI())
				if path == "direct" {
					c = directClient(b, s)
				}
				ctx := context.Background()
				coll := c.Database("bench").Collection(fmt.Sprintf("cas_%d_%s", size, path))
				docs := make([]any, size)
				for i := range docs {
					docs[i] = bson.D{{Key: "_id", Value: fmt.Sprintf("k%05d", i)}, {Key: "v", Value: int64(0)}, {Key: "pad", Value: strings.Repeat("x", 200)}}
				}
				if _, err := coll.InsertMany(ctx, docs); err != nil {
					b.Fatal(err)
				}
				// The middle document: the backend's scan stops at the first match.
				id, v := fmt.Sprintf("k%05d", size/2), int64(0)
				for b.Loop() {
					res, err := coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "v", Value: v}},
						bson.D{{Key: "v", Value: v + 1}, {Key: "pad", Value: "x"}})
					if err != nil || res.MatchedCount != 1 {
						b.Fatalf("swap from %d: %v, matched %d", v, err, res.MatchedCount)
					}
					v++
				}
			})
		}
	}
}
