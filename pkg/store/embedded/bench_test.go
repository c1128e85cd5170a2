package embedded

import (
	"context"
	"fmt"
	"math"
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
// several sizes of documents shaped like the store's: through the front
// as configured (it splits the write by _id from defaultPinMin documents
// on), through the front always splitting, through the front never
// splitting, and directly to FerretDB. The front's own cost is the
// difference between "never" and "direct"; the split pays off where
// "always" beats "never".
func BenchmarkCompareAndSwap(b *testing.B) {
	s := startServer(b, func(o *Options) { o.CleanupInterval = -1 })
	f := frontOf(s)
	for _, size := range []int{1, 2, 3, 5, 10, 20, 1000} {
		for _, path := range []string{"front", "always", "never", "direct"} {
			b.Run(fmt.Sprintf("docs=%d/%s", size, path), func(b *testing.B) {
				switch path {
				case "always":
					f.pinMin.Store(0)
				case "never":
					f.pinMin.Store(math.MaxInt64)
				default:
					f.pinMin.Store(defaultPinMin)
				}
				defer f.pinMin.Store(defaultPinMin)
				c := connect(b, s.URI())
				if path == "direct" {
					c = directClient(b, s)
				}
				ctx := context.Background()
				coll := c.Database("bench").Collection(fmt.Sprintf("cas_%d_%s", size, path))
				if err := coll.Drop(ctx); err != nil {
					b.Fatal(err)
				}
				docs := make([]any, size)
				for i := range docs {
					docs[i] = resourceDoc(fmt.Sprintf("ns/k%05d", i), 0)
				}
				if _, err := coll.InsertMany(ctx, docs); err != nil {
					b.Fatal(err)
				}
				// The middle document: the backend's scan stops at the first match.
				id, v := fmt.Sprintf("ns/k%05d", size/2), int64(0)
				for b.Loop() {
					res, err := coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "metadata.resourceVersion", Value: fmt.Sprint(v)},
						{Key: "metadata.deletionTimestamp", Value: bson.D{{Key: "$exists", Value: false}}}}, resourceDoc(id, v+1))
					if err != nil || res.MatchedCount != 1 {
						b.Fatalf("swap from %d: %v, matched %d", v, err, res.MatchedCount)
					}
					v++
				}
			})
		}
	}
}

// resourceDoc is a document shaped like the resource store's.
func resourceDoc(id string, version int64) bson.D {
	ns, name, _ := strings.Cut(id, "/")
	return bson.D{{Key: "_id", Value: id},
		{Key: "metadata", Value: bson.D{{Key: "name", Value: name}, {Key: "namespace", Value: ns},
			{Key: "uid", Value: "4b3e3a8e-5d0c-4d43-9d1e-0c2f4e3b9a11"}, {Key: "resourceVersion", Value: fmt.Sprint(version)},
			{Key: "generation", Value: int64(1)}, {Key: "creationTimestamp", Value: bson.DateTime(1795537208830)},
			{Key: "labels", Value: bson.D{{Key: "app", Value: "bench"}, {Key: "tier", Value: "backend"}}}}},
		{Key: "spec", Value: bson.D{{Key: "holder", Value: "group-abcdef123456"}, {Key: "token", Value: version},
			{Key: "ttlMillis", Value: int64(30000)}, {Key: "renewTime", Value: bson.DateTime(1795537208830)}}},
		{Key: "_capstan", Value: bson.D{{Key: "spec", Value: "e5b5e7bfe9348f76dc98b480f0ab96a3"}, {Key: "status", Value: "e3b0c44298fc1c149afbf4c8996fb924"},
			{Key: "rest", Value: int64(268)}}},
	}
}
