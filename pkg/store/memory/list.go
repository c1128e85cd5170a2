package memory

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// List implements store.Reader. Pages continue after the last key of the
// previous page, so an object present during the whole paging appears
// exactly once, whatever else is written meanwhile.
func (s *Store) List(ctx context.Context, kind string, opts store.ListOptions) (*store.ListResult, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	k, err := s.scheme.Kind(kind)
	if err != nil {
		return nil, err
	}
	if err := checkNamespaceFilter(k, opts.Namespace); err != nil {
		return nil, err
	}
	if opts.Limit < 0 {
		return nil, errs.Invalid("limit", "limit must not be negative, got %d", opts.Limit)
	}
	var after *continueToken
	if opts.Continue != "" {
		t, err := decodeContinue(opts.Continue)
		if err != nil {
			return nil, err
		}
		if t.Revision > s.rev.Load() {
			return nil, errs.Invalid("continue", "continue token is from another store")
		}
		after = &t
	}
	sel := opts.Selector
	if sel != nil && sel.Empty() {
		sel = nil
	}
	ks := s.kindStore(k)

	var matched []meta.Object
	ks.mu.RLock()
	rev := s.rev.Load()
	for key, obj := range ks.objs {
		if opts.Namespace != "" && key.Namespace != opts.Namespace {
			continue
		}
		if after != nil && compareKeys(key, after.Key) <= 0 {
			continue
		}
		if sel != nil && !sel.Matches(labels.Set(obj.GetObjectMeta().Labels)) {
			continue
		}
		matched = append(matched, obj)
	}
	ks.mu.RUnlock()
	if after != nil {
		rev = after.Revision
	}

	slices.SortFunc(matched, func(a, b meta.Object) int {
		return compareKeys(meta.KeyOf(a), meta.KeyOf(b))
	})
	res := &store.ListResult{Revision: meta.FormatResourceVersion(rev)}
	if opts.Limit > 0 && int64(len(matched)) > opts.Limit {
		matched = matched[:opts.Limit]
		res.Continue = encodeContinue(continueToken{Revision: rev, Key: meta.KeyOf(matched[len(matched)-1])})
	}
	res.Items = make([]meta.Object, len(matched))
	for i, obj := range matched {
		res.Items[i] = meta.DeepCopy(obj)
	}
	return res, nil
}

func compareKeys(a, b meta.Key) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// continueToken is what a continue token encodes: the first page's
// revision and the last key returned so far.
type continueToken struct {
	Revision uint64   `json:"rev"`
	Key      meta.Key `json:"key"`
}

func encodeContinue(t continueToken) string {
	data, _ := json.Marshal(t) // a struct of a number and strings always encodes
	return base64.RawURLEncoding.EncodeToString(data)
}

func decodeContinue(s string) (continueToken, error) {
	var t continueToken
	data, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return t, errs.Invalid("continue", "malformed continue token")
	}
	if err := meta.DecodeStrict(data, &t); err != nil || t.Key.Name == "" || t.Revision == 0 {
		return t, errs.Invalid("continue", "malformed continue token")
	}
	return t, nil
}
