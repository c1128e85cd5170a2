package mongox

import (
	"bytes"
	"context"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/capstanhq/capstan/pkg/errs"
)

// Index is an index that EnsureIndexes creates.
type Index struct {
	// Name identifies the index; required, and how EnsureIndexes finds an
	// existing one.
	Name string
	// Keys are the indexed fields in order, each 1 (ascending) or -1
	// (descending); "$**" wildcard paths are passed through.
	Keys bson.D
	// Unique makes the index reject a second document with the same keys.
	Unique bool
	// Sparse leaves documents without the indexed fields out.
	Sparse bool
}

// EnsureIndexes creates the indexes of want that coll lacks, one command
// each. An existing index of the same name must have the same keys and
// uniqueness, else the result is errs.FailedPrecondition and nothing is
// changed: EnsureIndexes never drops an index. Running it again, or from
// several processes at once, is harmless.
func EnsureIndexes(ctx context.Context, coll *mongo.Collection, want ...Index) error {
	for _, ix := range want {
		if ix.Name == "" || len(ix.Keys) == 0 {
			return errs.Invalid("index", "index %q needs a name and keys", ix.Name)
		}
	}
	missing, err := missingIndexes(ctx, coll, want)
	if err != nil || len(missing) == 0 {
		return err
	}
	// One index per command: FerretDB's createIndexes with several new
	// indexes on a new collection intermittently panics ("slice bounds out
	// of range") and drops the connection; single-index commands do not.
	for _, ix := range missing {
		o := options.Index().SetName(ix.Name)
		if ix.Unique {
			o.SetUnique(true)
		}
		if ix.Sparse {
			o.SetSparse(true)
		}
		if _, err := coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: ix.Keys, Options: o}); err != nil {
			// Another process may have created it in the meantime; if
			// what exists now matches, that is success.
			if again, lerr := missingIndexes(ctx, coll, []Index{ix}); lerr == nil && len(again) == 0 {
				continue
			}
			return Errf(err, "create index %s on %s", ix.Name, coll.Name())
		}
	}
	return nil
}

// missingIndexes lists coll's indexes and returns those of want that do
// not exist; an existing index that differs from its wanted form is
// errs.FailedPrecondition.
func missingIndexes(ctx context.Context, coll *mongo.Collection, want []Index) ([]Index, error) {
	specs, err := coll.Indexes().ListSpecifications(ctx)
	if err != nil {
		if HasCode(err, CodeNamespaceNotFound) {
			return want, nil // the collection does not exist yet
		}
		return nil, Errf(err, "list indexes of %s", coll.Name())
	}
	have := make(map[string]mongo.IndexSpecification, len(specs))
	for _, s := range specs {
		have[s.Name] = s
	}
	var missing []Index
	for _, ix := range want {
		s, ok := have[ix.Name]
		if !ok {
			missing = append(missing, ix)
			continue
		}
		if err := sameIndex(ix, s); err != nil {
			return nil, errs.Wrap(errs.FailedPrecondition, err, "index %q on %s differs from the one required", ix.Name, coll.Name())
		}
	}
	return missing, nil
}

func sameIndex(ix Index, s mongo.IndexSpecification) error {
	want, err := bson.Marshal(normalizeKeys(ix.Keys))
	if err != nil {
		return err
	}
	var got bson.D
	if err := bson.Unmarshal(s.KeysDocument, &got); err != nil {
		return err
	}
	gotRaw, err := bson.Marshal(normalizeKeys(got))
	if err != nil {
		return err
	}
	if !bytes.Equal(want, gotRaw) {
		return fmt.Errorf("keys are %s, want %s", bson.Raw(gotRaw), bson.Raw(want))
	}
	unique := s.Unique != nil && *s.Unique
	if unique != ix.Unique {
		return fmt.Errorf("unique is %v, want %v", unique, ix.Unique)
	}
	return nil
}

// normalizeKeys turns every numeric direction into an int32 so that keys
// written as 1, int64(1) or 1.0 compare equal.
func normalizeKeys(keys bson.D) bson.D {
	out := make(bson.D, len(keys))
	for i, e := range keys {
		v := e.Value
		switch n := v.(type) {
		case int:
			v = int32(n)
		case int64:
			v = int32(n)
		case float64:
			v = int32(n)
		}
		out[i] = bson.E{Key: e.Key, Value: v}
	}
	return out
}
