package source

import (
	"context"
	"encoding/json"
	"reflect"
	"sort"
	"sync"

	"github.com/go-logr/logr"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// Store is what a Cache reads from: a store.Store or anything that lists,
// watches and knows its scheme.
type Store interface {
	ListWatcher
	Scheme() *store.Scheme
}

// CacheOptions configure a Cache.
type CacheOptions struct {
	// Namespace restricts every informer to one namespace; empty means all.
	Namespace string
	// Informer holds defaults for the informers the cache creates
	// (Namespace is taken from above).
	Informer InformerOptions
	// Logger receives informer errors.
	Logger logr.Logger
}

// Cache is a set of informers, one per kind, and a store.Reader over them.
// Informers are created on first use (Informer, IndexField) and run once
// the cache is started, or at once if it already is.
type Cache struct {
	st   Store
	opts CacheOptions

	mu        sync.Mutex
	informers map[string]*Informer
	ctx       context.Context // set by Start
	stopped   bool            // Start is returning: start no more informers
	wg        sync.WaitGroup
	runErr    chan error
}

// NewCache returns a cache over st.
func NewCache(st Store, opts CacheOptions) *Cache {
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	return &Cache{st: st, opts: opts, informers: map[string]*Informer{}, runErr: make(chan error, 1)}
}

// Scheme returns the store's scheme.
func (c *Cache) Scheme() *store.Scheme { return c.st.Scheme() }

// Informer returns the informer of kind, creating (and, if the cache runs,
// starting) it. An unknown kind is errs.InvalidArgument.
func (c *Cache) Informer(kind string) (*Informer, error) {
	if _, err := c.st.Scheme().Kind(kind); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if inf, ok := c.informers[kind]; ok {
		return inf, nil
	}
	o := c.opts.Informer
	o.Namespace = c.opts.Namespace
	if o.Logger.GetSink() == nil {
		o.Logger = c.opts.Logger.WithValues("kind", kind)
	}
	inf := NewInformer(c.st, kind, o)
	c.informers[kind] = inf
	if c.ctx != nil && !c.stopped {
		c.run(inf)
	}
	return inf, nil
}

// InformerFor returns the informer of obj's kind.
func (c *Cache) InformerFor(obj meta.Object) (*Informer, error) {
	k, err := c.st.Scheme().KindOf(obj)
	if err != nil {
		return nil, err
	}
	return c.Informer(k.Name)
}

// IndexField adds an index named name to kind's informer.
func (c *Cache) IndexField(kind, name string, fn IndexFunc) error {
	inf, err := c.Informer(kind)
	if err != nil {
		return err
	}
	return inf.AddIndex(name, fn)
}

// Start runs every informer, present and future, until ctx ends, then
// waits for them to stop. An informer that fails for good (see
// Informer.Run) stops the others, and Start returns its error.
func (c *Cache) Start(ctx context.Context) error {
	c.mu.Lock()
	if c.ctx != nil {
		c.mu.Unlock()
		return errs.New(errs.FailedPrecondition, "cache already started")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.ctx = ctx
	for _, inf := range c.informers {
		c.run(inf)
	}
	c.mu.Unlock()
	var err error
	select {
	case <-ctx.Done():
	case err = <-c.runErr:
	}
	c.mu.Lock()
	c.stopped = true // no wg.Add may race with the Wait below
	c.mu.Unlock()
	cancel()
	c.wg.Wait()
	return err
}

func (c *Cache) run(inf *Informer) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := inf.Run(c.ctx); err != nil {
			select {
			case c.runErr <- err:
			default:
			}
		}
	}()
}

// WaitForCacheSync waits until every informer created so far has synced,
// and reports whether they did before ctx ended.
func (c *Cache) WaitForCacheSync(ctx context.Context) bool {
	c.mu.Lock()
	infs := make([]*Informer, 0, len(c.informers))
	for _, inf := range c.informers {
		infs = append(infs, inf)
	}
	c.mu.Unlock()
	for _, inf := range infs {
		if !inf.WaitForSync(ctx) {
			return false
		}
	}
	return true
}

// HasSynced reports whether every informer created so far has synced.
func (c *Cache) HasSynced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, inf := range c.informers {
		if !inf.HasSynced() {
			return false
		}
	}
	return true
}

// existing returns kind's informer only if someone created it.
func (c *Cache) existing(kind string) (*Informer, error) {
	c.mu.Lock()
	inf, ok := c.informers[kind]
	c.mu.Unlock()
	if !ok {
		return nil, errs.New(errs.FailedPrecondition, "no informer for kind %q: watch it (For/Owns/Watches) or call Cache.Informer before reading it from the cache", kind)
	}
	return inf, nil
}

// Get implements store.Reader: a deep copy of the cached object.
func (c *Cache) Get(ctx context.Context, key meta.Key, obj meta.Object) error {
	k, err := c.st.Scheme().KindOf(obj)
	if err != nil {
		return err
	}
	inf, err := c.existing(k.Name)
	if err != nil {
		return err
	}
	cached, ok := inf.Get(key)
	if !ok {
		return store.NotFoundError(k.Name, key)
	}
	if reflect.TypeOf(obj) != reflect.TypeOf(cached) {
		return convert(k, obj, cached)
	}
	meta.CopyInto(obj, cached)
	return nil
}

// convert fills obj, an Unstructured of a typed kind (or the other way
// round), from cached through the kind's JSON form, as stores do.
func convert(k *store.Kind, obj, cached meta.Object) error {
	data, err := json.Marshal(cached)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "encode cached %s %s", k.Name, meta.KeyOf(cached))
	}
	fresh := reflect.New(reflect.TypeOf(obj).Elem()).Interface().(meta.Object)
	if err := json.Unmarshal(data, fresh); err != nil {
		return errs.Wrap(errs.Internal, err, "decode cached %s %s as %T", k.Name, meta.KeyOf(cached), obj)
	}
	if u, ok := fresh.(*meta.Unstructured); ok {
		u.Kind = k.Name // typed objects do not encode their kind
	}
	reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(fresh).Elem())
	return nil
}

// List implements store.Reader over the cache: deep copies sorted by
// namespace and name. Limit and Continue are not supported by the cache
// (InvalidArgument); Revision is empty.
func (c *Cache) List(ctx context.Context, kind string, opts store.ListOptions) (*store.ListResult, error) {
	if opts.Limit != 0 || opts.Continue != "" {
		return nil, errs.Invalid("limit", "the cache does not page; list the store instead")
	}
	inf, err := c.existing(kind)
	if err != nil {
		return nil, err
	}
	items := inf.List(opts.Namespace, opts.Selector)
	return &store.ListResult{Items: copySorted(items)}, nil
}

// ListByIndex returns deep copies of kind's cached objects whose index has
// value, sorted by key.
func (c *Cache) ListByIndex(ctx context.Context, kind, index, value string) ([]meta.Object, error) {
	inf, err := c.existing(kind)
	if err != nil {
		return nil, err
	}
	items, err := inf.ByIndex(index, value)
	if err != nil {
		return nil, err
	}
	return copySorted(items), nil
}

func copySorted(items []meta.Object) []meta.Object {
	sort.Slice(items, func(i, j int) bool {
		a, b := items[i].GetObjectMeta(), items[j].GetObjectMeta()
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	out := make([]meta.Object, len(items))
	for i, it := range items {
		out[i] = meta.DeepCopy(it)
	}
	return out
}
