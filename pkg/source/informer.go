package source

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// ListWatcher is what an informer reads: a store, or anything that lists
// and watches like one.
type ListWatcher interface {
	store.Reader
	store.Watcher
}

// ResourceEventHandler receives an informer's changes. Calls to the
// handlers of one informer never overlap and come in the order of the
// changes, after the cache reflects them, so a handler may read the cache
// (Get, List, ByIndex, or a Cache over the informer); calls must not block
// for long (a controller's handler only adds to a work queue). Objects are
// the cache's own: handlers must not modify them.
type ResourceEventHandler interface {
	// OnAdd is called for a new object; isInInitialList is true for
	// objects of the first list.
	OnAdd(obj meta.Object, isInInitialList bool)
	// OnUpdate is called with the previous and the new state (both the
	// same object on a resync).
	OnUpdate(oldObj, newObj meta.Object)
	// OnDelete is called with the last known state of a deleted object.
	OnDelete(obj meta.Object)
}

// HandlerFuncs adapts functions to ResourceEventHandler; nil ones are
// skipped.
type HandlerFuncs struct {
	AddFunc    func(obj meta.Object, isInInitialList bool)
	UpdateFunc func(oldObj, newObj meta.Object)
	DeleteFunc func(obj meta.Object)
}

// OnAdd implements ResourceEventHandler.
func (h HandlerFuncs) OnAdd(obj meta.Object, initial bool) {
	if h.AddFunc != nil {
		h.AddFunc(obj, initial)
	}
}

// OnUpdate implements ResourceEventHandler.
func (h HandlerFuncs) OnUpdate(o, n meta.Object) {
	if h.UpdateFunc != nil {
		h.UpdateFunc(o, n)
	}
}

// OnDelete implements ResourceEventHandler.
func (h HandlerFuncs) OnDelete(obj meta.Object) {
	if h.DeleteFunc != nil {
		h.DeleteFunc(obj)
	}
}

// IndexFunc returns the values under which an object is indexed.
type IndexFunc func(obj meta.Object) []string

// InformerOptions configure an Informer.
type InformerOptions struct {
	// Namespace restricts the informer to one namespace; empty means all.
	Namespace string
	// Selector restricts the cache to matching objects; objects that stop
	// matching are reported deleted.
	Selector labels.Selector
	// ResyncPeriod, if set, re-delivers every cached object as an update
	// about this often (jittered by up to 10%).
	ResyncPeriod time.Duration
	// PageSize, if positive, lists in pages of this size. The default, 0,
	// lists in one call: every object ends up in the cache anyway, and a
	// single cursor is much cheaper than pages for both stores (a page
	// re-sorts or re-scans what follows its start).
	PageSize int64
	// MinBackoff and MaxBackoff bound the wait before a failed list or
	// watch is retried; defaults 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives list/watch errors.
	Logger logr.Logger
}

// Informer keeps an indexed cache of one kind in step with the store.
type Informer struct {
	lw   ListWatcher
	kind string
	opts InformerOptions

	// deliver serializes changes with the handler calls that report
	// them (and the replay for a handler added late), so that every
	// handler sees each change exactly once and in order. Handlers run
	// under deliver but not under mu, so they may read the cache.
	deliver sync.Mutex

	mu       sync.RWMutex // guards the cache: items, indexes, handlers
	items    map[meta.Key]meta.Object
	indexers map[string]IndexFunc
	indices  map[string]map[string]map[meta.Key]struct{}
	handlers []ResourceEventHandler
	started  bool

	synced   atomic.Bool
	syncedCh chan struct{}
	revision string // guarded by the run goroutine only
}

// NewInformer returns an informer of kind over lw. Add indexes and handlers,
// then Run it.
func NewInformer(lw ListWatcher, kind string, opts InformerOptions) *Informer {
	if opts.PageSize < 0 {
		opts.PageSize = 0
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 10 * time.Second
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	return &Informer{
		lw: lw, kind: kind, opts: opts,
		items:    map[meta.Key]meta.Object{},
		indexers: map[string]IndexFunc{},
		indices:  map[string]map[string]map[meta.Key]struct{}{},
		syncedCh: make(chan struct{}),
	}
}

// Kind returns the informer's kind.
func (inf *Informer) Kind() string { return inf.kind }

// AddIndex adds a named index. Adding one after the informer started
// indexes the objects already cached.
func (inf *Informer) AddIndex(name string, fn IndexFunc) error {
	inf.mu.Lock()
	defer inf.mu.Unlock()
	if _, ok := inf.indexers[name]; ok {
		return errs.New(errs.AlreadyExists, "index %q already exists on %s", name, inf.kind)
	}
	inf.indexers[name] = fn
	inf.indices[name] = map[string]map[meta.Key]struct{}{}
	for k, obj := range inf.items {
		inf.indexOne(name, fn, k, obj)
	}
	return nil
}

// AddEventHandler registers h. A handler added after the initial list
// first receives OnAdd for every cached object (with isInInitialList true),
// so that it misses nothing, then every later change. It must not be
// called from a handler of the same informer.
func (inf *Informer) AddEventHandler(h ResourceEventHandler) {
	inf.deliver.Lock()
	defer inf.deliver.Unlock()
	inf.mu.Lock()
	inf.handlers = append(inf.handlers, h)
	var replay []meta.Object
	if inf.synced.Load() {
		replay = make([]meta.Object, 0, len(inf.items))
		for _, obj := range inf.items {
			replay = append(replay, obj)
		}
	}
	inf.mu.Unlock()
	for _, obj := range replay {
		h.OnAdd(obj, true)
	}
}

// notification is one handler call to make.
type notification struct {
	old, obj meta.Object // old is nil for an add; obj is nil for a delete
	initial  bool
}

// notify calls every handler in hs for each of ns; the caller holds
// deliver but not mu.
func notify(hs []ResourceEventHandler, ns []notification) {
	for _, n := range ns {
		for _, h := range hs {
			switch {
			case n.obj == nil:
				h.OnDelete(n.old)
			case n.old == nil:
				h.OnAdd(n.obj, n.initial)
			default:
				h.OnUpdate(n.old, n.obj)
			}
		}
	}
}

// HasSynced reports whether the first list has been loaded.
func (inf *Informer) HasSynced() bool { return inf.synced.Load() }

// WaitForSync blocks until the first list is loaded or ctx ends, and
// reports which.
func (inf *Informer) WaitForSync(ctx context.Context) bool {
	select {
	case <-inf.syncedCh:
		return true
	case <-ctx.Done():
		return false
	}
}

// Get returns the cached object with key (the cache's own: do not modify).
func (inf *Informer) Get(key meta.Key) (meta.Object, bool) {
	inf.mu.RLock()
	defer inf.mu.RUnlock()
	obj, ok := inf.items[key]
	return obj, ok
}

// List returns the cached objects in namespace (all if empty) matching sel
// (all if nil), unordered; the cache's own objects.
func (inf *Informer) List(namespace string, sel labels.Selector) []meta.Object {
	inf.mu.RLock()
	defer inf.mu.RUnlock()
	out := make([]meta.Object, 0, len(inf.items))
	for k, obj := range inf.items {
		if namespace != "" && k.Namespace != namespace {
			continue
		}
		if sel != nil && !sel.Matches(labels.Set(obj.GetObjectMeta().Labels)) {
			continue
		}
		out = append(out, obj)
	}
	return out
}

// ByIndex returns the cached objects whose index name has value.
func (inf *Informer) ByIndex(name, value string) ([]meta.Object, error) {
	inf.mu.RLock()
	defer inf.mu.RUnlock()
	idx, ok := inf.indices[name]
	if !ok {
		return nil, errs.New(errs.FailedPrecondition, "no index %q on %s", name, inf.kind)
	}
	keys := idx[value]
	out := make([]meta.Object, 0, len(keys))
	for k := range keys {
		out = append(out, inf.items[k])
	}
	return out, nil
}

// Len returns the number of cached objects.
func (inf *Informer) Len() int {
	inf.mu.RLock()
	defer inf.mu.RUnlock()
	return len(inf.items)
}

// Run lists and watches until ctx ends. It returns nil then; it returns an
// error only if the kind is unknown to the store.
func (inf *Informer) Run(ctx context.Context) error {
	inf.mu.Lock()
	if inf.started {
		inf.mu.Unlock()
		return errs.New(errs.FailedPrecondition, "informer for %s already started", inf.kind)
	}
	inf.started = true
	inf.mu.Unlock()

	var resync <-chan time.Time // nil: never
	if inf.opts.ResyncPeriod > 0 {
		resync = time.After(jitter(inf.opts.ResyncPeriod))
	}
	backoff := inf.opts.MinBackoff
	needList := true
	for ctx.Err() == nil {
		if needList {
			if err := inf.relist(ctx); err != nil {
				if errs.IsInvalidArgument(err) {
					return err
				}
				if ctx.Err() != nil {
					break
				}
				inf.opts.Logger.Error(err, "list failed; retrying", "kind", inf.kind, "backoff", backoff)
				if !sleep(ctx, backoff) {
					break
				}
				backoff = min(backoff*2, inf.opts.MaxBackoff)
				continue
			}
			needList = false
			backoff = inf.opts.MinBackoff
		}
		expired, progressed, err := inf.watch(ctx, &resync)
		switch {
		case ctx.Err() != nil:
		case expired:
			needList = true
		case err != nil:
			if progressed {
				backoff = inf.opts.MinBackoff
			}
			inf.opts.Logger.Error(err, "watch failed; resuming", "kind", inf.kind, "revision", inf.revision, "backoff", backoff)
			if errs.IsInvalidArgument(err) {
				needList = true
			}
			if !sleep(ctx, backoff) {
				break
			}
			backoff = min(backoff*2, inf.opts.MaxBackoff)
		}
	}
	return nil
}

// relist lists everything and replaces the cache, delivering the
// differences as events.
func (inf *Informer) relist(ctx context.Context) error {
	fresh := map[meta.Key]meta.Object{}
	var revision, cont string
	for {
		res, err := inf.lw.List(ctx, inf.kind, store.ListOptions{
			Namespace: inf.opts.Namespace, Selector: inf.opts.Selector,
			Limit: inf.opts.PageSize, Continue: cont,
		})
		if err != nil {
			return err
		}
		if revision == "" {
			revision = res.Revision
		}
		for _, obj := range res.Items {
			fresh[meta.KeyOf(obj)] = obj
		}
		if cont = res.Continue; cont == "" {
			break
		}
	}
	inf.revision = revision
	first := !inf.synced.Load()

	inf.deliver.Lock()
	defer inf.deliver.Unlock()
	var ns []notification
	inf.mu.Lock()
	for k, old := range inf.items {
		if _, ok := fresh[k]; !ok {
			inf.remove(k, old)
			ns = append(ns, notification{old: old})
		}
	}
	for k, obj := range fresh {
		old, had := inf.items[k]
		if had && sameVersion(old, obj) {
			continue
		}
		inf.put(k, obj, old)
		if had && !sameIncarnation(old, obj) {
			// Deleted and created again while the watch was away: that
			// is two changes, not an update.
			ns = append(ns, notification{old: old}, notification{obj: obj})
			continue
		}
		ns = append(ns, notification{old: old, obj: obj, initial: first})
	}
	hs := inf.handlers
	inf.mu.Unlock()
	notify(hs, ns)
	if first {
		inf.synced.Store(true)
		close(inf.syncedCh)
	}
	return nil
}

// watch consumes one watch stream. It reports whether the position
// expired, whether any event arrived, and the error that ended it.
func (inf *Informer) watch(ctx context.Context, resync *<-chan time.Time) (expired, progressed bool, err error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := inf.lw.Watch(wctx, inf.kind, store.WatchOptions{Namespace: inf.opts.Namespace, Revision: inf.revision, Bookmarks: true})
	if err != nil {
		return false, false, err
	}
	for {
		select {
		case <-ctx.Done():
			return false, progressed, nil
		case <-*resync:
			inf.resync()
			*resync = time.After(jitter(inf.opts.ResyncPeriod))
		case ev, ok := <-ch:
			if !ok {
				return false, progressed, errs.New(errs.Unavailable, "watch of %s closed", inf.kind)
			}
			progressed = true
			switch ev.Type {
			case store.Expired:
				return true, progressed, nil
			case store.Error:
				return false, progressed, ev.Err
			case store.Bookmark:
			default:
				inf.apply(wctx, ev)
			}
			if ev.Revision != "" {
				inf.revision = ev.Revision
			}
		}
	}
}

func (inf *Informer) apply(ctx context.Context, ev store.Event) {
	obj := ev.Object
	k := meta.KeyOf(obj)
	if ev.Type == store.Deleted && obj.GetObjectMeta().UID == "" && inf.stillStored(ctx, k) {
		return
	}
	inf.deliver.Lock()
	defer inf.deliver.Unlock()
	inf.mu.Lock()
	ns := inf.change(ev.Type, k, obj)
	hs := inf.handlers
	inf.mu.Unlock()
	notify(hs, ns)
}

// stillStored reports whether the store holds the very incarnation the
// cache has under k. A delete event that carries only the key (the MongoDB
// oplog's) cannot say which incarnation it removed; a watch from a list's
// revision may repeat the delete of one older than the list showed, and
// while the store still has the cached uid, the cached object was not
// deleted. When the store cannot tell, the delete is applied: a repeated
// one is followed by the repeated create of what the list showed.
func (inf *Informer) stillStored(ctx context.Context, k meta.Key) bool {
	inf.mu.RLock()
	cached, ok := inf.items[k]
	inf.mu.RUnlock()
	if !ok || cached.GetObjectMeta().UID == "" {
		return false
	}
	fresh := meta.DeepCopy(cached)
	if err := inf.lw.Get(ctx, k, fresh); err != nil {
		return false
	}
	return fresh.GetObjectMeta().UID == cached.GetObjectMeta().UID
}

// change applies one watch event to the cache and returns the handler
// calls it makes; the caller holds mu.
func (inf *Informer) change(typ store.EventType, k meta.Key, obj meta.Object) []notification {
	old, had := inf.items[k]
	matches := inf.opts.Selector == nil || inf.opts.Selector.Matches(labels.Set(obj.GetObjectMeta().Labels))
	if typ == store.Deleted || !matches {
		if !had {
			return nil
		}
		if typ == store.Deleted && !olderOrSame(old, obj) {
			// A delete of an incarnation older than the cached one.
			return nil
		}
		inf.remove(k, old)
		return []notification{{old: old}}
	}
	if had && olderOrSame(obj, old) {
		return nil // the list already showed this version, or a newer one
	}
	inf.put(k, obj, old)
	if had && !sameIncarnation(old, obj) {
		// The delete of the cached incarnation was not seen.
		return []notification{{old: old}, {obj: obj}}
	}
	return []notification{{old: old, obj: obj}}
}

func (inf *Informer) resync() {
	inf.deliver.Lock()
	defer inf.deliver.Unlock()
	inf.mu.RLock()
	ns := make([]notification, 0, len(inf.items))
	for _, obj := range inf.items {
		ns = append(ns, notification{old: obj, obj: obj})
	}
	hs := inf.handlers
	inf.mu.RUnlock()
	notify(hs, ns)
}

// put stores obj under k (replacing old, which may be nil) and updates the
// indexes; the caller holds mu.
func (inf *Informer) put(k meta.Key, obj, old meta.Object) {
	if old != nil {
		inf.unindex(k, old)
	}
	inf.items[k] = obj
	for name, fn := range inf.indexers {
		inf.indexOne(name, fn, k, obj)
	}
}

func (inf *Informer) remove(k meta.Key, old meta.Object) {
	inf.unindex(k, old)
	delete(inf.items, k)
}

func (inf *Informer) indexOne(name string, fn IndexFunc, k meta.Key, obj meta.Object) {
	idx := inf.indices[name]
	for _, v := range fn(obj) {
		set := idx[v]
		if set == nil {
			set = map[meta.Key]struct{}{}
			idx[v] = set
		}
		set[k] = struct{}{}
	}
}

func (inf *Informer) unindex(k meta.Key, old meta.Object) {
	for name, fn := range inf.indexers {
		idx := inf.indices[name]
		for _, v := range fn(old) {
			if set := idx[v]; set != nil {
				delete(set, k)
				if len(set) == 0 {
					delete(idx, v)
				}
			}
		}
	}
}

// olderOrSame reports whether a is the same incarnation as b at the same or
// an older resourceVersion. Objects without a uid (a Deleted event that
// carries only the key) count as the same incarnation.
func olderOrSame(a, b meta.Object) bool {
	am, bm := a.GetObjectMeta(), b.GetObjectMeta()
	if am.UID != "" && bm.UID != "" && am.UID != bm.UID {
		return false
	}
	if am.ResourceVersion == "" || bm.ResourceVersion == "" {
		return true
	}
	av, err1 := meta.ParseResourceVersion(am.ResourceVersion)
	bv, err2 := meta.ParseResourceVersion(bm.ResourceVersion)
	return err1 == nil && err2 == nil && av <= bv
}

// sameIncarnation reports whether a and b are the same object rather than
// two objects that had the same key one after the other.
func sameIncarnation(a, b meta.Object) bool {
	au, bu := a.GetObjectMeta().UID, b.GetObjectMeta().UID
	return au == "" || bu == "" || au == bu
}

func sameVersion(a, b meta.Object) bool {
	am, bm := a.GetObjectMeta(), b.GetObjectMeta()
	return am.UID == bm.UID && am.ResourceVersion == bm.ResourceVersion
}

func jitter(d time.Duration) time.Duration {
	return d + time.Duration(rand.Int64N(int64(d)/10+1))
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
