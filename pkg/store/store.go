package store

import (
	"context"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/capstanhq/capstan/pkg/meta"
)

// Store reads, writes and watches resources. Every method is safe for
// concurrent use.
type Store interface {
	Reader
	Writer
	Watcher
	// Scheme returns the kinds this store knows.
	Scheme() *Scheme
	// Close releases the store's resources; watches end.
	Close(ctx context.Context) error
}

// Reader reads resources.
type Reader interface {
	// Get reads the object with key into obj. The kind is obj's (its Go
	// type, or Kind for *meta.Unstructured). Missing objects are
	// errs.NotFound.
	Get(ctx context.Context, key meta.Key, obj meta.Object) error
	// List returns the objects of kind that match opts, ordered by
	// namespace and name.
	List(ctx context.Context, kind string, opts ListOptions) (*ListResult, error)
}

// Writer writes resources. On success each method updates obj in place
// with what was stored (uid, resourceVersion, generation, timestamps).
// WithFence guards Create, Update and UpdateStatus with a fencing token.
type Writer interface {
	// Create stores a new object. An existing key is errs.AlreadyExists.
	Create(ctx context.Context, obj meta.Object, opts ...WriteOption) error
	// Update writes obj's metadata (the client-owned fields), spec and
	// other top-level fields, never its status. With a resourceVersion
	// set it is a compare-and-swap: a stale version is errs.Conflict.
	// Removing the last finalizer of an object being deleted deletes it.
	Update(ctx context.Context, obj meta.Object, opts ...WriteOption) error
	// UpdateStatus writes only obj's status, compare-and-swap on its
	// resourceVersion like Update.
	UpdateStatus(ctx context.Context, obj meta.Object, opts ...WriteOption) error
	// Delete deletes the object with obj's key, or marks it with a
	// deletionTimestamp while it has finalizers. obj receives the last
	// state. Preconditions in opts must hold, else errs.Conflict.
	Delete(ctx context.Context, obj meta.Object, opts ...DeleteOption) error
}

// Watcher streams changes.
type Watcher interface {
	// Watch streams the changes of kind after opts.Revision (from now if
	// empty). The channel closes when ctx ends or after an Expired or
	// Error event; the consumer must keep reading until then or cancel
	// ctx.
	Watch(ctx context.Context, kind string, opts WatchOptions) (<-chan Event, error)
}

// ListOptions filter and page a List.
type ListOptions struct {
	// Namespace restricts the list to one namespace; empty means all.
	Namespace string
	// Selector filters by labels; nil means everything.
	Selector labels.Selector
	// Limit is the largest number of items to return; 0 means no limit.
	Limit int64
	// Continue is the token of the previous page's ListResult.
	Continue string
}

// ListResult is one page of a List.
type ListResult struct {
	// Items are the objects, ordered by namespace and name. Their Go type
	// is the kind's registered type, or *meta.Unstructured.
	Items []meta.Object
	// Revision is where a Watch continues so that no later change is
	// missed. Every page of one paged list has the first page's revision.
	Revision string
	// Continue is the token for the next page, empty on the last one.
	Continue string
}

// WatchOptions select what a Watch delivers.
type WatchOptions struct {
	// Namespace restricts events to one namespace; empty means all.
	Namespace string
	// Revision is the position to continue from (a ListResult's or an
	// Event's Revision); empty means now.
	Revision string
	// Bookmarks asks for periodic Bookmark events carrying the current
	// revision, so that a consumer can resume from a recent position even
	// when its kind sees no writes.
	Bookmarks bool
}

// EventType says what happened.
type EventType string

// Event types.
const (
	// Added: the object was created.
	Added EventType = "Added"
	// Modified: the object was updated (including being marked for
	// deletion).
	Modified EventType = "Modified"
	// Deleted: the object is gone; Object holds its last state.
	Deleted EventType = "Deleted"
	// Bookmark: nothing changed up to Revision; Object is nil.
	Bookmark EventType = "Bookmark"
	// Expired: the requested position is no longer available; the
	// consumer must List again. The channel closes after it.
	Expired EventType = "Expired"
	// Error: the watch failed (Err says why); the channel closes after
	// it and the consumer should restart from its last revision.
	Error EventType = "Error"
)

// Event is one change.
type Event struct {
	// Type says what happened.
	Type EventType
	// Object is the object after the change (before it, for Deleted). The
	// receiver owns it.
	Object meta.Object
	// Revision is the position just after this event: a Watch from it
	// continues with the next change.
	Revision string
	// Err is set on Error events.
	Err error
}

// DeleteOptions modify a Delete.
type DeleteOptions struct {
	// Preconditions must hold for the delete to happen.
	Preconditions Preconditions
}

// Preconditions guard a write: each non-empty field must equal the stored
// object's, else the write fails with errs.Conflict.
type Preconditions struct {
	// UID of the object.
	UID string
	// ResourceVersion of the object.
	ResourceVersion string
}

// DeleteOption sets a DeleteOptions field.
type DeleteOption func(*DeleteOptions)

// WithPreconditions makes a Delete conditional.
func WithPreconditions(p Preconditions) DeleteOption {
	return func(o *DeleteOptions) { o.Preconditions = p }
}

// ApplyDeleteOptions folds opts into a DeleteOptions.
func ApplyDeleteOptions(opts []DeleteOption) DeleteOptions {
	var o DeleteOptions
	for _, f := range opts {
		f(&o)
	}
	return o
}

// SchemeReader is a Reader that knows its kinds (a Store, a cache).
type SchemeReader interface {
	Reader
	// Scheme returns the kinds the reader knows.
	Scheme() *Scheme
}

// ListOf lists the kind registered for *T and returns typed items.
func ListOf[T any, PT interface {
	*T
	meta.Object
}](ctx context.Context, r SchemeReader, opts ListOptions) ([]PT, *ListResult, error) {
	k, err := r.Scheme().KindOf(PT(new(T)))
	if err != nil {
		return nil, nil, err
	}
	res, err := r.List(ctx, k.Name, opts)
	if err != nil {
		return nil, nil, err
	}
	out := make([]PT, 0, len(res.Items))
	for _, it := range res.Items {
		out = append(out, it.(PT))
	}
	return out, res, nil
}
