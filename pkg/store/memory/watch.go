package memory

import (
	"context"
	"sort"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// change is one write in a kind's ring. obj is the stored object (for
// Deleted, the last state with the delete's resourceVersion); nobody
// modifies it.
type change struct {
	typ store.EventType
	obj meta.Object
	rev uint64
}

// ring holds a kind's most recent changes in revision order.
type ring struct {
	size int      // capacity
	buf  []change // grows to size, then wraps
	head int      // index of the oldest change once buf is full
	lost uint64   // revision of the newest change overwritten, 0 if none
}

func (r *ring) add(c change) {
	if len(r.buf) < r.size {
		r.buf = append(r.buf, c)
		return
	}
	r.lost = r.buf[r.head].rev
	r.buf[r.head] = c
	r.head++
	if r.head == len(r.buf) {
		r.head = 0
	}
}

func (r *ring) at(i int) change {
	i += r.head
	if i >= len(r.buf) {
		i -= len(r.buf)
	}
	return r.buf[i]
}

// after appends to out up to max changes with revisions above pos.
func (r *ring) after(pos uint64, out []change, max int) []change {
	n := len(r.buf)
	i := sort.Search(n, func(i int) bool { return r.at(i).rev > pos })
	for ; i < n && len(out) < max; i++ {
		out = append(out, r.at(i))
	}
	return out
}

// watchBatch bounds how many changes a watch copies out of the ring at a
// time.
const watchBatch = 256

// watchBuffer is the capacity of a watch's channel.
const watchBuffer = 64

// Watch implements store.Watcher. Each watch follows its kind's ring in
// its own goroutine; writers never wait for it.
func (s *Store) Watch(ctx context.Context, kind string, opts store.WatchOptions) (<-chan store.Event, error) {
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
	var pos uint64
	if opts.Revision != "" {
		if pos, err = meta.ParseResourceVersion(opts.Revision); err != nil {
			return nil, errs.Invalid("revision", "%q is not a revision", opts.Revision)
		}
	}
	ks := s.kindStore(k)
	if opts.Revision == "" {
		// Under the read lock no write of this kind is between taking its
		// revision and entering the ring, so every change after pos is
		// yet to come or in the ring.
		ks.mu.RLock()
		pos = s.rev.Load()
		ks.mu.RUnlock()
	}
	ch := make(chan store.Event, watchBuffer)
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return nil, errs.New(errs.Unavailable, "memory store is closed")
	}
	s.watchers.Add(1)
	s.mu.Unlock()
	go s.follow(ctx, ks, pos, opts, ch)
	return ch, nil
}

// read returns up to watchBatch changes after pos, the store's revision
// (every change of the kind up to it is in the ring or overwritten),
// whether pos is no longer (or not yet) available, and, when there is
// nothing to read, a channel the next write closes.
func (s *Store) read(ks *kindStore, pos uint64, buf []change) (out []change, cur uint64, expired bool, wait <-chan struct{}) {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	cur = s.rev.Load()
	if pos > cur || pos < ks.ring.lost {
		return nil, cur, true, nil
	}
	out = ks.ring.after(pos, buf[:0], watchBatch)
	if len(out) == 0 {
		w := ks.wait.Load()
		if w == nil {
			c := make(chan struct{})
			if !ks.wait.CompareAndSwap(nil, &c) {
				w = ks.wait.Load() // another watcher's; writers are locked out
			} else {
				w = &c
			}
		}
		wait = *w
	}
	return out, cur, false, wait
}

// follow delivers ks's changes after pos to ch until ctx ends, the store
// closes or pos expires.
func (s *Store) follow(ctx context.Context, ks *kindStore, pos uint64, opts store.WatchOptions, ch chan<- store.Event) {
	defer s.watchers.Done()
	defer close(ch)
	send := func(ev store.Event) bool {
		select {
		case ch <- ev:
			return true
		case <-ctx.Done():
		case <-s.done:
		}
		return false
	}
	var tick <-chan time.Time
	if opts.Bookmarks {
		t := time.NewTicker(s.opts.bookmarkInterval)
		defer t.Stop()
		tick = t.C
	}
	bookmarkDue := false
	buf := make([]change, 0, 16)
	for {
		batch, cur, expired, wait := s.read(ks, pos, buf)
		if expired {
			send(store.Event{Type: store.Expired, Err: errs.New(errs.OutOfRange,
				"revision %d of %s is no longer in the watch history", pos, ks.kind.Name)})
			return
		}
		for i, c := range batch {
			pos = c.rev
			batch[i] = change{} // let the ring's overwritten objects go
			if opts.Namespace != "" && c.obj.GetObjectMeta().Namespace != opts.Namespace {
				continue
			}
			ev := store.Event{Type: c.typ, Object: meta.DeepCopy(c.obj), Revision: meta.FormatResourceVersion(c.rev)}
			if !send(ev) {
				return
			}
		}
		buf = batch[:0]
		if len(batch) > 0 {
			continue
		}
		pos = cur
		if bookmarkDue {
			bookmarkDue = false
			if !send(store.Event{Type: store.Bookmark, Revision: meta.FormatResourceVersion(cur)}) {
				return
			}
		}
		select {
		case <-wait:
		case <-tick:
			bookmarkDue = true
		case <-ctx.Done():
			return
		case <-s.done:
			return
		}
	}
}
