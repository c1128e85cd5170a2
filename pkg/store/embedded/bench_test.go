package embedded

import (
	"context"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// BenchmarkFindOneAndUpdate measures one findOneAndUpdate round trip
// through the front and directly to FerretDB's socket.
func BenchmarkFindOneAndUpdate(b *testing.B) {
	s := startServer(b, func(o *Options) { o.CleanupInterval = -1 })
	s.mu.Lock()
	sock := s.run.sockPath
	s.mu.Unlock()
	direct := "mongodb://" + strings.ReplaceAll(sock, "/", "%2F") + "/?directConnection=true"
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
	s.mu.Lock()
	sock := s.run.sockPath
	s.mu.Unlock()
	direct := "mongodb://" + strings.ReplaceAll(sock, "/", "%2F") + "/?directConnection=true"
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
