package mongo

import (
	"context"
	"sync"
	"sync/atomic"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/mongo/changes"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongox"
)

// Store is a store.Store on a MongoDB database. Its methods are safe for
// concurrent use.
type Store struct {
	client *mongo.Client
	owned  bool // Close disconnects the client
	db     *mongo.Database
	scheme *store.Scheme
	opts   Options
	info   mongox.ServerInfo
	feed   changes.Feed

	colls sync.Map // kind name → *collection
	specs specCache

	ctx     context.Context // ends when the store closes; watches stop
	cancel  context.CancelFunc
	wg      sync.WaitGroup // watch goroutines; Add under watchMu
	watchMu sync.Mutex

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// collection is a kind's collection and whether its indexes exist.
type collection struct {
	coll  *mongo.Collection
	mu    sync.Mutex
	ready atomic.Bool
}

// New returns a store over client's database opts.Database. It detects
// the watch mode when asked (WatchAuto) and creates the indexes of every
// kind scheme knows now (kinds registered later get theirs on first use).
// The store does not own client: Close leaves it connected.
func New(ctx context.Context, client *mongo.Client, scheme *store.Scheme, opts Options) (*Store, error) {
	if client == nil || scheme == nil {
		return nil, errs.Invalid("", "mongo.New needs a client and a scheme")
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	info, err := mongox.Describe(ctx, client)
	if err != nil {
		return nil, err
	}
	feed, err := changes.New(ctx, client, changes.Mode(o.WatchMode), o.Changes)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		client: client,
		db:     client.Database(o.Database, options.Database().SetWriteConcern(o.WriteConcern)),
		scheme: scheme,
		opts:   o,
		info:   info,
		feed:   feed,
		specs:  newSpecCache(1 << 16),
		ctx:    sctx,
		cancel: cancel,
	}
	for _, k := range scheme.Kinds() {
		if _, err := s.collection(ctx, k); err != nil {
			cancel()
			_ = feed.Close(context.WithoutCancel(ctx))
			return nil, err
		}
	}
	return s, nil
}

// Open connects to uri (mongox.Connect with opts.Connect) and returns a
// store that owns the client: Close disconnects it.
func Open(ctx context.Context, uri string, scheme *store.Scheme, opts Options) (*Store, error) {
	client, err := mongox.Connect(ctx, uri, opts.Connect)
	if err != nil {
		return nil, err
	}
	s, err := New(ctx, client, scheme, opts)
	if err != nil {
		_ = client.Disconnect(context.WithoutCancel(ctx))
		return nil, err
	}
	s.owned = true
	return s, nil
}

// Scheme implements store.Store.
func (s *Store) Scheme() *store.Scheme { return s.scheme }

// Client returns the store's client.
func (s *Store) Client() *mongo.Client { return s.client }

// Database returns the store's database.
func (s *Store) Database() *mongo.Database { return s.db }

// WatchMode returns the mode watches use (never WatchAuto).
func (s *Store) WatchMode() WatchMode { return WatchMode(s.feed.Mode()) }

// Close implements store.Store: watches end (their channels close), the
// change feed stops, and a client Open made is disconnected. Calling it
// again returns the first result.
func (s *Store) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.watchMu.Lock()
		s.closed.Store(true)
		s.watchMu.Unlock()
		s.cancel()
		err := s.feed.Close(ctx)
		done := make(chan struct{})
		go func() {
			s.wg.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			if err == nil {
				err = errs.Wrap(errs.DeadlineExceeded, ctx.Err(), "wait for watches to end")
			}
		}
		if s.owned {
			if derr := s.client.Disconnect(ctx); derr != nil && err == nil {
				err = mongox.Errf(derr, "disconnect")
			}
		}
		s.closeErr = err
	})
	return s.closeErr
}

// opCtx bounds ctx by the store's Timeout when it has no deadline.
func (s *Store) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.opts.Timeout > 0 {
		if _, ok := ctx.Deadline(); !ok {
			return context.WithTimeout(ctx, s.opts.Timeout)
		}
	}
	return ctx, func() {}
}

// indexes are the indexes of every kind's collection.
func (s *Store) indexes() []mongox.Index {
	ix := []mongox.Index{
		{Name: "uid", Keys: bson.D{{Key: "metadata.uid", Value: 1}}, Unique: true},
		{Name: "namespace_name", Keys: bson.D{{Key: "metadata.namespace", Value: 1}, {Key: "metadata.name", Value: 1}}},
	}
	if !s.info.FerretDB {
		// FerretDB has no wildcard indexes (and serves no query but by _id
		// from an index anyway).
		ix = append(ix, mongox.Index{Name: "labels", Keys: bson.D{{Key: "metadata.labels.$**", Value: 1}}})
	}
	return ix
}

// collection returns kind's collection, creating its indexes on first use.
func (s *Store) collection(ctx context.Context, kind *store.Kind) (*mongo.Collection, error) {
	v, ok := s.colls.Load(kind.Name)
	if !ok {
		v, _ = s.colls.LoadOrStore(kind.Name, &collection{coll: s.db.Collection(kind.Collection)})
	}
	c := v.(*collection)
	if c.ready.Load() {
		return c.coll, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ready.Load() {
		if err := mongox.EnsureIndexes(ctx, c.coll, s.indexes()...); err != nil {
			return nil, err
		}
		c.ready.Store(true)
	}
	return c.coll, nil
}

// namespace returns the change-feed namespace of kind's collection.
func (s *Store) namespace(kind *store.Kind) changes.Namespace {
	return changes.Namespace{DB: s.opts.Database, Coll: kind.Collection}
}

// documentID returns the _id of key in kind after checking the key: a
// valid name, and a valid namespace exactly when the kind is namespaced.
func documentID(kind *store.Kind, key meta.Key) (string, error) {
	if err := meta.ValidateName("metadata.name", key.Name); err != nil {
		return "", err
	}
	switch {
	case kind.Namespaced && key.Namespace == "":
		return "", errs.Invalid("metadata.namespace", "namespace is required for kind %s", kind.Name)
	case !kind.Namespaced && key.Namespace != "":
		return "", errs.Invalid("metadata.namespace", "kind %s is cluster-scoped; namespace %q not allowed", kind.Name, key.Namespace)
	case kind.Namespaced:
		if err := meta.ValidateNamespace("metadata.namespace", key.Namespace); err != nil {
			return "", err
		}
	}
	return key.String(), nil
}

// specCache remembers the spec hash of recently seen object versions, so
// that Update usually knows whether the spec changed without reading the
// stored object. It holds about max entries in two generations.
type specCache struct {
	mu   sync.Mutex
	max  int
	cur  map[string]string
	prev map[string]string
}

func newSpecCache(max int) specCache {
	return specCache{max: max, cur: map[string]string{}}
}

func specKey(uid, rv string) string { return uid + "\x00" + rv }

func (c *specCache) put(uid, rv, hash string) {
	if uid == "" || rv == "" || hash == "" {
		return
	}
	c.mu.Lock()
	if len(c.cur) >= c.max/2 {
		c.prev, c.cur = c.cur, make(map[string]string, c.max/2)
	}
	c.cur[specKey(uid, rv)] = hash
	c.mu.Unlock()
}

func (c *specCache) get(uid, rv string) (string, bool) {
	k := specKey(uid, rv)
	c.mu.Lock()
	defer c.mu.Unlock()
	if h, ok := c.cur[k]; ok {
		return h, true
	}
	h, ok := c.prev[k]
	return h, ok
}

// remember records the spec hash of a stored document.
func (s *Store) remember(raw bson.Raw) {
	uid, rv := storedMeta(raw)
	h, _ := raw.Lookup(fieldStore, keySpecHash).StringValueOK()
	s.specs.put(uid, rv, h)
}
