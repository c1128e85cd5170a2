package embedded

import (
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// lookupPlan returns SQLite's plan for FerretDB's pushed-down lookup by
// _id in db.coll.
func lookupPlan(t *testing.T, s *Server, db, coll string) string {
	t.Helper()
	u := url.URL{Scheme: "file", Path: filepath.Join(s.opts.DataDir, db+".sqlite"), RawQuery: "_pragma=busy_timeout(10000)"}
	h, err := sql.Open("sqlite", u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var table string
	if err := h.QueryRow(`SELECT table_name FROM "_ferretdb_collections" WHERE name = ?`, coll).Scan(&table); err != nil {
		t.Fatalf("table of %s.%s: %v", db, coll, err)
	}
	rows, err := h.Query(`EXPLAIN QUERY PLAN SELECT _ferretdb_sjson FROM `+sqlIdent(table)+` WHERE _ferretdb_sjson->'$._id' = ?`, `"x"`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	return strings.Join(plan, "; ")
}

func usesLookupIndex(plan string) bool { return strings.Contains(plan, idIndexName) }

// A collection created by a write through the front gets the lookup
// index at once; one created past the front gets it at the next start; a
// dropped and re-created one gets it again. FerretDB does not list it,
// and _id stays unique.
func TestLookupIndexes(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, func(o *Options) { o.DataDir = dir })
	ctx := testCtx(t)
	c := connect(t, s.URI())
	coll := c.Database("app").Collection("things")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}}); err != nil {
		t.Fatal(err)
	}
	if plan := lookupPlan(t, s, "app", "things"); !usesLookupIndex(plan) {
		t.Fatalf("after the first insert through the front, the lookup plan is %q", plan)
	}
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}}); !mongo.IsDuplicateKeyError(err) {
		t.Fatalf("second insert of _id a: %v, want a duplicate key error", err)
	}
	specs, err := coll.Indexes().ListSpecifications(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 1 || specs[0].Name != "_id_" {
		t.Fatalf("indexes listed: %+v, want only _id_", specs)
	}

	// Past the front: no index until the server starts again.
	if _, err := directClient(t, s).Database("app").Collection("direct").InsertOne(ctx, bson.D{{Key: "_id", Value: "b"}}); err != nil {
		t.Fatal(err)
	}
	if plan := lookupPlan(t, s, "app", "direct"); usesLookupIndex(plan) {
		t.Fatalf("a collection the front never saw has the lookup index: %q", plan)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if plan := lookupPlan(t, s, "app", "direct"); !usesLookupIndex(plan) {
		t.Fatalf("after a restart, the lookup plan is %q", plan)
	}

	// Drop and re-create.
	c = connect(t, s.URI())
	coll = c.Database("app").Collection("things")
	if err := coll.Drop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "c"}}); err != nil {
		t.Fatal(err)
	}
	if plan := lookupPlan(t, s, "app", "things"); !usesLookupIndex(plan) {
		t.Fatalf("after drop and re-create, the lookup plan is %q", plan)
	}
	if err := c.Database("app").Drop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Database("app").Collection("again").InsertOne(ctx, bson.D{{Key: "_id", Value: fmt.Sprint(1)}}); err != nil {
		t.Fatal(err)
	}
	if plan := lookupPlan(t, s, "app", "again"); !usesLookupIndex(plan) {
		t.Fatalf("after dropping the database, the lookup plan is %q", plan)
	}
}
