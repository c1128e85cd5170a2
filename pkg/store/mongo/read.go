package mongo

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/mongo/changes"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongox"
)

// Get implements store.Reader: one find by _id.
func (s *Store) Get(ctx context.Context, key meta.Key, obj meta.Object) error {
	kind, err := s.scheme.KindOf(obj)
	if err != nil {
		return err
	}
	if _, err := documentID(kind, key); err != nil {
		return err
	}
	coll, err := s.collection(ctx, kind)
	if err != nil {
		return err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	raw, err := s.fetch(ctx, coll, kind, key)
	if err != nil {
		return err
	}
	if err := decodeObject(raw, kind, obj); err != nil {
		return err
	}
	s.remember(raw)
	return nil
}

// continueToken is the state a List page hands to the next: the first
// page's revision and the last key returned.
type continueToken struct {
	V         int    `json:"v"`
	Revision  string `json:"r"`
	Namespace string `json:"ns,omitempty"`
	Name      string `json:"n"`
}

func (t continueToken) encode() string {
	b, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(b)
}

func parseContinue(s string, mode changes.Mode) (continueToken, error) {
	bad := func() (continueToken, error) {
		return continueToken{}, errs.Invalid("continue", "malformed continue token")
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return bad()
	}
	var t continueToken
	if meta.DecodeStrict(b, &t) != nil || t.V != 1 || t.Name == "" {
		return bad()
	}
	p, err := changes.ParsePosition(t.Revision)
	if err != nil || p.Mode() != mode {
		return bad()
	}
	return t, nil
}

// List implements store.Reader. The revision is a change feed position
// taken before the query (the first page's, on later pages).
// Pages continue after the last key returned, so an object present
// during the whole paging appears exactly once. Selector requirements on
// label keys that can be addressed go into the query; the selector is
// also checked on every object read.
func (s *Store) List(ctx context.Context, kindName string, opts store.ListOptions) (*store.ListResult, error) {
	kind, err := s.scheme.Kind(kindName)
	if err != nil {
		return nil, err
	}
	if opts.Namespace != "" {
		if !kind.Namespaced {
			return nil, errs.Invalid("namespace", "kind %s is cluster-scoped; namespace %q not allowed", kind.Name, opts.Namespace)
		}
		if err := meta.ValidateNamespace("namespace", opts.Namespace); err != nil {
			return nil, err
		}
	}
	if opts.Limit < 0 {
		return nil, errs.Invalid("limit", "limit must not be negative, got %d", opts.Limit)
	}
	var tok continueToken
	if opts.Continue != "" {
		if tok, err = parseContinue(opts.Continue, s.feed.Mode()); err != nil {
			return nil, err
		}
	}
	coll, err := s.collection(ctx, kind)
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()

	revision := tok.Revision
	if revision == "" {
		p, err := s.feed.Current(ctx, s.namespace(kind))
		if err != nil {
			return nil, err
		}
		revision = p.String()
	}

	filter := bson.D{}
	if opts.Namespace != "" {
		filter = append(filter, bson.E{Key: "metadata.namespace", Value: opts.Namespace})
	}
	sel := opts.Selector
	if sel != nil && sel.Empty() {
		sel = nil
	}
	if sel != nil {
		filter = append(filter, selectorFilter(sel)...)
	}
	if opts.Continue != "" {
		if kind.Namespaced {
			filter = append(filter, bson.E{Key: "$or", Value: bson.A{
				bson.D{{Key: "metadata.namespace", Value: bson.D{{Key: "$gt", Value: tok.Namespace}}}},
				bson.D{{Key: "metadata.namespace", Value: tok.Namespace}, {Key: "metadata.name", Value: bson.D{{Key: "$gt", Value: tok.Name}}}},
			}})
		} else {
			filter = append(filter, bson.E{Key: "metadata.name", Value: bson.D{{Key: "$gt", Value: tok.Name}}})
		}
	}
	fo := options.Find().SetSort(bson.D{{Key: "metadata.namespace", Value: 1}, {Key: "metadata.name", Value: 1}})
	if opts.Limit > 0 {
		fo.SetBatchSize(int32(min(opts.Limit+1, 1000)))
		if sel == nil || selectorPushedDown(sel) {
			fo.SetLimit(opts.Limit + 1)
		}
	} else {
		fo.SetBatchSize(1000)
	}
	cur, err := coll.Find(ctx, filter, fo)
	if err != nil {
		return nil, mongox.Errf(err, "list %s", kind.Name)
	}
	defer func() { _ = cur.Close(context.WithoutCancel(ctx)) }()

	res := &store.ListResult{Revision: revision}
	if opts.Limit > 0 {
		res.Items = make([]meta.Object, 0, min(opts.Limit, 1000))
	}
	for cur.Next(ctx) {
		obj := kind.New()
		if err := decodeObject(cur.Current, kind, obj); err != nil {
			return nil, err
		}
		m := obj.GetObjectMeta()
		if sel != nil && !sel.Matches(labels.Set(m.Labels)) {
			continue
		}
		if opts.Limit > 0 && int64(len(res.Items)) == opts.Limit {
			last := res.Items[len(res.Items)-1].GetObjectMeta()
			res.Continue = continueToken{V: 1, Revision: revision, Namespace: last.Namespace, Name: last.Name}.encode()
			break
		}
		s.remember(cur.Current)
		res.Items = append(res.Items, obj)
	}
	if err := cur.Err(); err != nil {
		return nil, mongox.Errf(err, "list %s", kind.Name)
	}
	return res, nil
}

// labelPath returns the document path of a label key, and whether a
// query can address it (servers refuse paths with spaces).
func labelPath(key string) (string, bool) {
	esc := escapeKey(key)
	if strings.TrimSpace(esc) != esc || strings.ContainsAny(esc, " \t") {
		return "", false
	}
	return "metadata.labels." + esc, true
}

// selectorFilter returns query conditions for the requirements of sel
// that a query can express exactly; the others are left to the check of
// every object read.
func selectorFilter(sel labels.Selector) bson.D {
	reqs, _ := sel.Requirements()
	var out bson.D
	for _, r := range reqs {
		path, ok := labelPath(r.Key())
		if !ok {
			continue
		}
		vals := r.Values().List()
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals:
			out = append(out, bson.E{Key: path, Value: vals[0]})
		case selection.NotEquals:
			out = append(out, bson.E{Key: path, Value: bson.D{{Key: "$ne", Value: vals[0]}}})
		case selection.In:
			out = append(out, bson.E{Key: path, Value: bson.D{{Key: "$in", Value: vals}}})
		case selection.NotIn:
			out = append(out, bson.E{Key: path, Value: bson.D{{Key: "$nin", Value: vals}}})
		case selection.Exists:
			out = append(out, bson.E{Key: path, Value: bson.D{{Key: "$exists", Value: true}}})
		case selection.DoesNotExist:
			out = append(out, bson.E{Key: path, Value: bson.D{{Key: "$exists", Value: false}}})
		}
	}
	// Two conditions on one path would overwrite each other in a
	// document: combine them with $and.
	seen := map[string]bool{}
	dup := false
	for _, e := range out {
		dup = dup || seen[e.Key]
		seen[e.Key] = true
	}
	if dup {
		and := make(bson.A, len(out))
		for i, e := range out {
			and[i] = bson.D{e}
		}
		return bson.D{{Key: "$and", Value: and}}
	}
	return out
}

// selectorPushedDown reports whether selectorFilter expresses all of sel,
// so that a query limit is exact.
func selectorPushedDown(sel labels.Selector) bool {
	reqs, _ := sel.Requirements()
	for _, r := range reqs {
		if _, ok := labelPath(r.Key()); !ok {
			return false
		}
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals, selection.NotEquals, selection.In, selection.NotIn, selection.Exists, selection.DoesNotExist:
		default:
			return false
		}
	}
	return true
}
