package memory

import (
	"context"
	"encoding/json"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// DefaultHistory is how many changes each kind keeps for watches unless
// WithHistory says otherwise.
const DefaultHistory = 10000

// DefaultBookmarkInterval is how often a watch that asked for bookmarks
// gets one unless WithBookmarkInterval says otherwise.
const DefaultBookmarkInterval = 5 * time.Second

// Option configures a Store.
type Option func(*options)

type options struct {
	history          int
	bookmarkInterval time.Duration
}

// WithHistory sets how many changes each kind keeps in its ring for
// watches (at least 1). A watch that starts from, or falls behind to, a
// revision older than the ring gets an Expired event. The ring holds the
// objects of those changes, so it costs up to n objects' memory per kind.
func WithHistory(n int) Option {
	return func(o *options) { o.history = max(n, 1) }
}

// WithBookmarkInterval sets how often an idle watch that asked for
// bookmarks receives one. Non-positive values keep the default.
func WithBookmarkInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.bookmarkInterval = d
		}
	}
}

// Store is the in-memory store. Create it with New; it is safe for
// concurrent use.
type Store struct {
	scheme *store.Scheme
	opts   options

	rev    atomic.Uint64 // revision of the last write, store-wide
	kinds  sync.Map      // kind name → *kindStore
	closed atomic.Bool

	mu       sync.Mutex // guards done's closing and watchers.Add against Close
	done     chan struct{}
	watchers sync.WaitGroup
}

var _ store.Store = (*Store)(nil)

// New returns an empty store for the kinds of scheme. Kinds registered in
// scheme later are served too.
func New(scheme *store.Scheme, opts ...Option) *Store {
	o := options{history: DefaultHistory, bookmarkInterval: DefaultBookmarkInterval}
	for _, f := range opts {
		f(&o)
	}
	return &Store{scheme: scheme, opts: o, done: make(chan struct{})}
}

// Scheme implements store.Store.
func (s *Store) Scheme() *store.Scheme { return s.scheme }

// Revision returns the store's current revision: the number of writes so
// far, as a decimal string.
func (s *Store) Revision() string { return meta.FormatResourceVersion(s.rev.Load()) }

// Close ends every watch (their channels close) and makes further calls
// fail with errs.Unavailable. It waits for the watches' goroutines to
// finish, or for ctx to end.
func (s *Store) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed.Load() {
		s.closed.Store(true)
		close(s.done)
	}
	s.mu.Unlock()
	finished := make(chan struct{})
	go func() {
		s.watchers.Wait()
		close(finished)
	}()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
		return errs.Wrap(errs.CodeOf(ctx.Err()), ctx.Err(), "close memory store")
	}
}

// kindStore holds one kind's objects and recent changes.
type kindStore struct {
	kind *store.Kind

	mu   sync.RWMutex
	objs map[meta.Key]meta.Object // stored objects; never modified in place
	ring ring

	// wait, when set, is closed by the next write; idle watchers wait on it.
	wait atomic.Pointer[chan struct{}]
}

// begin checks ctx and that the store is open.
func (s *Store) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return errs.Wrap(errs.CodeOf(err), err, "memory store")
	}
	if s.closed.Load() {
		return errs.New(errs.Unavailable, "memory store is closed")
	}
	return nil
}

func (s *Store) kindStore(k *store.Kind) *kindStore {
	if v, ok := s.kinds.Load(k.Name); ok {
		return v.(*kindStore)
	}
	v, _ := s.kinds.LoadOrStore(k.Name, &kindStore{
		kind: k,
		objs: map[meta.Key]meta.Object{},
		ring: ring{size: s.opts.history},
	})
	return v.(*kindStore)
}

func (s *Store) kindStoreOf(obj meta.Object) (*kindStore, error) {
	if obj == nil {
		return nil, errs.Invalid("kind", "object is nil")
	}
	k, err := s.scheme.KindOf(obj)
	if err != nil {
		return nil, err
	}
	return s.kindStore(k), nil
}

// commit stores obj under key (or removes the key for Deleted) with the
// next revision as its resourceVersion, records the change and wakes idle
// watchers; ks.mu must be held for writing. For Deleted, obj is the last
// state, which the Deleted event carries with the delete's revision.
func (s *Store) commit(ks *kindStore, typ store.EventType, key meta.Key, obj meta.Object) {
	rev := s.rev.Add(1)
	obj.GetObjectMeta().ResourceVersion = meta.FormatResourceVersion(rev)
	if typ == store.Deleted {
		delete(ks.objs, key)
	} else {
		ks.objs[key] = obj
	}
	ks.ring.add(change{typ: typ, obj: obj, rev: rev})
	if w := ks.wait.Swap(nil); w != nil {
		close(*w)
	}
}

// Get implements store.Reader.
func (s *Store) Get(ctx context.Context, key meta.Key, obj meta.Object) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	ks, err := s.kindStoreOf(obj)
	if err != nil {
		return err
	}
	ks.mu.RLock()
	stored := ks.objs[key]
	ks.mu.RUnlock()
	if stored == nil {
		return missing(ks.kind, key)
	}
	return fill(ks.kind, obj, stored)
}

// Create implements store.Writer.
func (s *Store) Create(ctx context.Context, obj meta.Object, opts ...store.WriteOption) error {
	wo, err := store.ApplyWriteOptions(opts)
	if err != nil {
		return err
	}
	if err := s.begin(ctx); err != nil {
		return err
	}
	ks, err := s.kindStoreOf(obj)
	if err != nil {
		return err
	}
	in, err := ownCopy(ks.kind, obj)
	if err != nil {
		return err
	}
	if err := ks.kind.PrepareCreate(in); err != nil {
		return err
	}
	store.ApplyFence(in, wo.Fence)
	key := meta.KeyOf(in)
	ks.mu.Lock()
	if _, ok := ks.objs[key]; ok {
		ks.mu.Unlock()
		return store.AlreadyExistsError(ks.kind.Name, key)
	}
	s.commit(ks, store.Added, key, in)
	ks.mu.Unlock()
	return fillWritten(ks.kind, obj, in)
}

// Update implements store.Writer.
func (s *Store) Update(ctx context.Context, obj meta.Object, opts ...store.WriteOption) error {
	return s.update(ctx, obj, false, opts)
}

// UpdateStatus implements store.Writer.
func (s *Store) UpdateStatus(ctx context.Context, obj meta.Object, opts ...store.WriteOption) error {
	return s.update(ctx, obj, true, opts)
}

// update computes the new object outside the lock from a snapshot of the
// stored one and commits it if the snapshot is still current, else
// computes again.
func (s *Store) update(ctx context.Context, obj meta.Object, status bool, opts []store.WriteOption) error {
	wo, err := store.ApplyWriteOptions(opts)
	if err != nil {
		return err
	}
	if err := s.begin(ctx); err != nil {
		return err
	}
	ks, err := s.kindStoreOf(obj)
	if err != nil {
		return err
	}
	in := obj
	if needsConversion(ks.kind, obj) {
		if in, err = ownCopy(ks.kind, obj); err != nil {
			return err
		}
	}
	// check reports the input's own errors, which come before NotFound and
	// Conflict.
	check := func() error {
		if status {
			_, err := meta.ParseResourceVersion(in.GetObjectMeta().ResourceVersion)
			return err
		}
		return ks.kind.Validate(in)
	}
	key := meta.KeyOf(in)
	want := in.GetObjectMeta().ResourceVersion
	for {
		ks.mu.RLock()
		stored := ks.objs[key]
		ks.mu.RUnlock()
		if stored == nil {
			if err := check(); err != nil {
				return err
			}
			return missing(ks.kind, key)
		}
		if have := stored.GetObjectMeta().ResourceVersion; want != "" && want != have {
			if err := check(); err != nil {
				return err
			}
			return store.ConflictError(ks.kind.Name, key, want, have)
		}
		if err := store.CheckFence(stored, wo.Fence); err != nil {
			return err
		}
		var out meta.Object
		if status {
			out, err = ks.kind.MergeStatus(stored, in)
		} else {
			out, err = ks.kind.MergeUpdate(stored, in)
		}
		if err != nil {
			return err
		}
		if wo.Fence != nil {
			if out == stored {
				out = meta.DeepCopy(out)
			}
			store.ApplyFence(out, wo.Fence)
		}
		typ := store.Modified
		if m := out.GetObjectMeta(); m.DeletionTimestamp != nil && len(m.Finalizers) == 0 {
			typ = store.Deleted
		}
		ks.mu.Lock()
		if ks.objs[key] != stored {
			ks.mu.Unlock()
			continue // written meanwhile: compare and merge again
		}
		s.commit(ks, typ, key, out)
		ks.mu.Unlock()
		if status {
			return fill(ks.kind, obj, out)
		}
		return fillWritten(ks.kind, obj, out)
	}
}

// Delete implements store.Writer.
func (s *Store) Delete(ctx context.Context, obj meta.Object, opts ...store.DeleteOption) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	ks, err := s.kindStoreOf(obj)
	if err != nil {
		return err
	}
	o := store.ApplyDeleteOptions(opts)
	key := meta.KeyOf(obj)
	ks.mu.Lock()
	stored := ks.objs[key]
	if stored == nil {
		ks.mu.Unlock()
		return missing(ks.kind, key)
	}
	if err := store.CheckPreconditions(stored, o.Preconditions); err != nil {
		ks.mu.Unlock()
		return err
	}
	sm := stored.GetObjectMeta()
	if sm.DeletionTimestamp != nil {
		ks.mu.Unlock()
		return fill(ks.kind, obj, stored)
	}
	out := meta.DeepCopy(stored)
	typ := store.Deleted
	if len(sm.Finalizers) > 0 {
		now := meta.Now()
		out.GetObjectMeta().DeletionTimestamp = &now
		typ = store.Modified
	}
	s.commit(ks, typ, key, out)
	ks.mu.Unlock()
	return fill(ks.kind, obj, out)
}

// fillWritten is fill for Create and Update, which store the caller's
// spec and other fields as they are: it copies just the metadata (where
// the store owns some fields) and the status, sparing a copy of the rest.
func fillWritten(k *store.Kind, dst, stored meta.Object) error {
	if needsConversion(k, dst) {
		return fill(k, dst, stored)
	}
	meta.CopyValueInto(reflect.ValueOf(dst.GetObjectMeta()).Elem(), reflect.ValueOf(stored.GetObjectMeta()).Elem())
	k.CopyStatus(dst, stored)
	return nil
}

// missing is the error for a key with no object: InvalidArgument when no
// object could ever have the key, else NotFound. Keys of stored objects
// were validated when they were created, so only misses pay for the check.
func missing(k *store.Kind, key meta.Key) error {
	if err := meta.ValidateName("metadata.name", key.Name); err != nil {
		return err
	}
	switch {
	case k.Namespaced && key.Namespace == "":
		return errs.Invalid("metadata.namespace", "namespace is required for kind %s", k.Name)
	case !k.Namespaced && key.Namespace != "":
		return errs.Invalid("metadata.namespace", "kind %s is cluster-scoped; namespace %q not allowed", k.Name, key.Namespace)
	case k.Namespaced:
		if err := meta.ValidateNamespace("metadata.namespace", key.Namespace); err != nil {
			return err
		}
	}
	return store.NotFoundError(k.Name, key)
}

// checkNamespaceFilter refuses a namespace filter on a cluster-scoped kind.
func checkNamespaceFilter(k *store.Kind, ns string) error {
	if ns != "" && !k.Namespaced {
		return errs.Invalid("namespace", "kind %s is cluster-scoped; namespace %q not allowed", k.Name, ns)
	}
	return nil
}

// needsConversion reports whether obj is an Unstructured of a typed kind.
func needsConversion(k *store.Kind, obj meta.Object) bool {
	_, u := obj.(*meta.Unstructured)
	return u && k.Typed()
}

// ownCopy returns a deep copy of obj in the kind's representation: its Go
// type, or Unstructured.
func ownCopy(k *store.Kind, obj meta.Object) (meta.Object, error) {
	if !needsConversion(k, obj) {
		return meta.DeepCopy(obj), nil
	}
	u := obj.(*meta.Unstructured)
	if err := k.Validate(u); err != nil {
		return nil, err
	}
	doc := make(map[string]any, len(u.Fields)+1)
	for name, v := range u.Fields {
		doc[name] = v
	}
	doc["metadata"] = &u.ObjectMeta
	data, err := json.Marshal(doc)
	if err != nil {
		return nil, errs.Wrap(errs.InvalidArgument, err, "object cannot be encoded")
	}
	out := k.New()
	if err := meta.DecodeStrict(data, out); err != nil {
		return nil, err
	}
	return out, nil
}

// fill copies stored into the caller's dst, converting a typed object to
// Unstructured when the caller asked for one.
func fill(k *store.Kind, dst, stored meta.Object) error {
	u, ok := dst.(*meta.Unstructured)
	if !ok || !k.Typed() {
		meta.CopyInto(dst, stored)
		return nil
	}
	data, err := json.Marshal(stored)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "encode %s %s", k.Name, meta.KeyOf(stored))
	}
	if err := u.UnmarshalJSON(data); err != nil {
		return errs.Wrap(errs.Internal, err, "convert %s %s", k.Name, meta.KeyOf(stored))
	}
	u.Kind = k.Name
	return nil
}
