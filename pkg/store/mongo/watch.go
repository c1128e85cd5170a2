package mongo

import (
	"context"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/mongo/changes"
)

// watchBuffer is the capacity of a watch's channel.
const watchBuffer = 64

// Watch implements store.Watcher over the store's change feed: a
// subscription to the kind's collection (the oplog tailer's fan-out, or a
// change stream of its own). Revisions are feed positions; one of the
// other mode, or a malformed one, is errs.InvalidArgument on "revision". A
// position the feed no longer holds gives one Expired event. Deleted
// events carry an object with only kind, namespace and name. Bookmarks
// carry the feed's position, which moves with writes to any collection.
func (s *Store) Watch(ctx context.Context, kindName string, opts store.WatchOptions) (<-chan store.Event, error) {
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
	var from changes.Position
	if opts.Revision != "" {
		if from, err = changes.ParsePosition(opts.Revision); err != nil {
			return nil, err
		}
		if from.Mode() != s.feed.Mode() {
			return nil, errs.Invalid("revision", "revision %q is of the %s feed; this store watches with %s", opts.Revision, from.Mode(), s.feed.Mode())
		}
	}
	if s.closed.Load() {
		return nil, errs.New(errs.FailedPrecondition, "the store is closed")
	}
	ch := make(chan store.Event, watchBuffer)
	sub, err := s.feed.Subscribe(ctx, changes.SubscribeOptions{
		Namespaces:    []changes.Namespace{s.namespace(kind)},
		From:          from,
		LookupUpdates: true,
	})
	if err != nil {
		if changes.IsExpired(err) {
			ch <- store.Event{Type: store.Expired, Err: err}
			close(ch)
			return ch, nil
		}
		return nil, err
	}
	s.watchMu.Lock()
	if s.closed.Load() {
		s.watchMu.Unlock()
		_ = sub.Close()
		return nil, errs.New(errs.FailedPrecondition, "the store is closed")
	}
	s.wg.Add(1)
	s.watchMu.Unlock()
	wctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	go func() {
		defer s.wg.Done()
		defer close(ch)
		defer func() { _ = sub.Close() }()
		defer stop()
		defer cancel()
		s.watchLoop(wctx, kind, opts, sub, ch)
	}()
	return ch, nil
}

// watchLoop turns the subscription's events into store events until ctx
// ends or the subscription fails.
func (s *Store) watchLoop(ctx context.Context, kind *store.Kind, opts store.WatchOptions, sub changes.Subscription, ch chan<- store.Event) {
	send := func(ev store.Event) bool {
		select {
		case ch <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	nextBookmark := time.Now().Add(s.opts.BookmarkInterval)
	for {
		nctx, ncancel := ctx, context.CancelFunc(func() {})
		if opts.Bookmarks {
			nctx, ncancel = context.WithDeadline(ctx, nextBookmark)
		}
		ev, err := sub.Next(nctx)
		bookmarkDue := nctx.Err() != nil && ctx.Err() == nil
		ncancel()
		if err != nil {
			switch {
			case ctx.Err() != nil, changes.IsClosed(err):
				return
			case bookmarkDue:
				if !send(store.Event{Type: store.Bookmark, Revision: sub.Position().String()}) {
					return
				}
				nextBookmark = time.Now().Add(s.opts.BookmarkInterval)
				continue
			case changes.IsExpired(err):
				send(store.Event{Type: store.Expired, Err: err})
				return
			default:
				send(store.Event{Type: store.Error, Err: err})
				return
			}
		}
		out, ok := s.convert(kind, opts.Namespace, ev)
		if !ok {
			continue
		}
		if !send(out) || out.Type == store.Expired || out.Type == store.Error {
			return
		}
	}
}

// convert turns a feed event into a store event; ok is false for events
// the watch does not deliver (another namespace, an update whose document
// was deleted before it could be read).
func (s *Store) convert(kind *store.Kind, namespace string, ev changes.Event) (store.Event, bool) {
	out := store.Event{Revision: ev.Position.String()}
	switch ev.Op {
	case changes.OpInsert, changes.OpUpdate, changes.OpReplace:
		if ev.Document == nil {
			return out, false
		}
		obj := kind.New()
		if err := decodeObject(ev.Document, kind, obj); err != nil {
			return store.Event{Type: store.Error, Err: err}, true
		}
		if namespace != "" && obj.GetObjectMeta().Namespace != namespace {
			return out, false
		}
		s.remember(ev.Document)
		out.Type = store.Modified
		if ev.Op == changes.OpInsert {
			out.Type = store.Added
		}
		out.Object = obj
	case changes.OpDelete:
		id, ok := ev.ID.StringValueOK()
		if !ok {
			return out, false
		}
		key, err := meta.ParseKey(id)
		if err != nil || (namespace != "" && key.Namespace != namespace) {
			return out, false
		}
		obj := kind.New()
		m := obj.GetObjectMeta()
		m.Namespace, m.Name = key.Namespace, key.Name
		out.Type, out.Object = store.Deleted, obj
	case changes.OpInvalidate:
		return store.Event{Type: store.Expired, Err: errs.New(errs.OutOfRange, "the %s collection was dropped or renamed", kind.Collection)}, true
	default:
		return out, false
	}
	return out, true
}
