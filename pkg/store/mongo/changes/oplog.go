package changes

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongox"
)

// OplogFeed is a Feed that tails local.oplog.rs with one tailable cursor,
// shared by all its subscriptions (see the package doc).
type OplogFeed struct {
	client *mongo.Client
	oplog  *mongo.Collection
	opts   Options
	poll   bool // plain tailable cursor polled by the client (FerretDB)

	ctx    context.Context // the feed's lifetime
	cancel context.CancelFunc
	wg     sync.WaitGroup // the tailer goroutine

	mu        sync.Mutex
	started   bool // a tailer goroutine runs
	closed    bool
	pos       Position       // every entry up to pos has been fanned out (or, stopped: a recent position)
	posAt     time.Time      // when pos was known to be recent, while the tailer is stopped
	fromEmpty bool           // the tailer started on an empty oplog and saw every entry since
	firstTS   bson.Timestamp // with fromEmpty: the first entry it saw (zero until then)
	hist      history
	subs      map[*oplogSub]struct{}
	lastUse   time.Time // of Current or Latest, for the idle stop

	// Polling: a poll is one getMore. A poll that started after a
	// barrier's request and came back empty proves the tailer has read
	// every entry written before the request.
	pollsStarted uint64
	caughtUp     uint64        // the last poll that came back empty
	caughtUpCh   chan struct{} // closed (and replaced) when caughtUp moves
	wake         chan struct{} // cuts the pause between polls short
}

// NewOplog returns a feed tailing client's local.oplog.rs (with
// opts.PollInterval zero it uses an awaitData cursor; New chooses for the
// server). The tailer starts with the first subscription or the first call
// of Current or Latest, stops after IdleTimeout without them, and the
// feed's Close stops it for good.
func NewOplog(client *mongo.Client, opts Options) *OplogFeed {
	o := opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &OplogFeed{
		client:     client,
		oplog:      client.Database(oplogDB).Collection(oplogColl),
		opts:       o,
		poll:       o.PollInterval > 0,
		ctx:        ctx,
		cancel:     cancel,
		hist:       history{maxEntries: o.History, maxBytes: 16 << 20},
		subs:       map[*oplogSub]struct{}{},
		caughtUpCh: make(chan struct{}),
		wake:       make(chan struct{}, 1),
	}
}

// Mode implements Feed.
func (f *OplogFeed) Mode() Mode { return ModeOplog }

// Current implements Feed. While the tailer runs it is the tailer's
// position, without a round trip (every entry after it is still to come;
// on FerretDB reading the newest entry means reading the whole oplog).
// Otherwise it is a position known within CurrentMaxAge (where the tailer
// stopped, or the newest entry read then) if the oplog still holds it, or
// else the newest entry. On an empty oplog it is the zero timestamp, and
// the tailer starts so that it sees the first entry ever written.
func (f *OplogFeed) Current(ctx context.Context, _ ...Namespace) (Position, error) {
	f.mu.Lock()
	f.lastUse = time.Now()
	p, at, started := f.pos, f.posAt, f.started
	f.mu.Unlock()
	if started {
		return p, nil
	}
	if p.mode == ModeOplog && !p.ts.IsZero() && time.Since(at) < f.opts.CurrentMaxAge {
		// A recent position (where the tailer stopped, or the newest entry
		// read a moment ago) is still good while the oplog holds it, which
		// is cheap to tell.
		if ok, err := f.exists(ctx, p); err == nil && ok {
			return p, nil
		}
	}
	return f.latestFromServer(ctx)
}

// Latest implements Feed. A polling tailer waits for its next poll that
// finds nothing new (at most DefaultBarrierTimeout, then it asks the
// server); otherwise it reads the newest entry.
func (f *OplogFeed) Latest(ctx context.Context, _ ...Namespace) (Position, error) {
	f.mu.Lock()
	f.lastUse = time.Now()
	running := f.started && f.poll
	f.mu.Unlock()
	if running {
		if p, ok := f.barrier(ctx); ok {
			return p, nil
		}
		if err := ctx.Err(); err != nil {
			return Position{}, errs.Wrap(errs.CodeOf(err), err, "wait for the oplog tailer")
		}
	}
	return f.latestFromServer(ctx)
}

// latestFromServer reads the newest entry. When the tailer does not run it
// remembers the position for Current, and on an empty oplog it starts the
// tailer, which then sees every entry from the first.
func (f *OplogFeed) latestFromServer(ctx context.Context) (Position, error) {
	ts, ok, err := f.newest(ctx)
	if err != nil {
		return Position{}, err
	}
	p := OplogPosition(ts)
	f.mu.Lock()
	if !f.started && !f.closed {
		if ok {
			f.pos, f.posAt = p, time.Now()
		} else {
			f.startLocked(p, true)
		}
	}
	f.mu.Unlock()
	return p, nil
}

// barrier waits for a poll that starts after the call and finds nothing
// new, and returns the position then.
func (f *OplogFeed) barrier(ctx context.Context) (Position, bool) {
	f.mu.Lock()
	target := f.pollsStarted + 1
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
	timer := time.NewTimer(DefaultBarrierTimeout)
	defer timer.Stop()
	for {
		f.mu.Lock()
		if f.caughtUp >= target {
			p := f.pos
			f.mu.Unlock()
			return p, true
		}
		if !f.started {
			f.mu.Unlock()
			return Position{}, false
		}
		ch := f.caughtUpCh
		f.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return Position{}, false
		case <-ctx.Done():
			return Position{}, false
		case <-f.ctx.Done():
			return Position{}, false
		}
	}
}

// newest returns the timestamp of the newest oplog entry; ok is false when
// the oplog is empty. (On FerretDB this reads the whole oplog.)
func (f *OplogFeed) newest(ctx context.Context) (bson.Timestamp, bool, error) {
	raw, err := f.oplog.FindOne(ctx, bson.D{}, options.FindOne().
		SetSort(bson.D{{Key: "$natural", Value: -1}}).
		SetProjection(bson.D{{Key: "ts", Value: 1}})).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return bson.Timestamp{}, false, nil
	}
	if err != nil {
		return bson.Timestamp{}, false, mongox.Errf(err, "read the newest oplog entry")
	}
	t, i, ok := raw.Lookup("ts").TimestampOK()
	if !ok {
		return bson.Timestamp{}, false, errs.New(errs.Internal, "the newest oplog entry has no timestamp")
	}
	return bson.Timestamp{T: t, I: i}, true, nil
}

// exists reports whether the oplog still holds position p, that is, no
// entry after p has been removed.
func (f *OplogFeed) exists(ctx context.Context, p Position) (bool, error) {
	ts := p.ts
	if ts.IsZero() {
		f.mu.Lock()
		fromEmpty, first, started := f.fromEmpty, f.firstTS, f.started
		f.mu.Unlock()
		if started && fromEmpty && first.IsZero() {
			return true, nil // the tailer has seen nothing yet: it reads from the start
		}
		if !started || !fromEmpty {
			_, ok, err := f.newest(ctx)
			return !ok, err // valid only while the oplog is still empty
		}
		ts = first
	}
	// Capped collections lose their oldest entries first: ts is still
	// there when the oldest entry is not newer. (A timestamp that was never
	// written passes too; positions come from the feed.)
	oldest, ok, err := f.oldest(ctx)
	if err != nil || !ok {
		return false, err
	}
	return compareTS(oldest, ts) <= 0, nil
}

// oldest returns the timestamp of the oldest oplog entry; ok is false when
// the oplog is empty. Reading in natural order with a limit is cheap on
// every server.
func (f *OplogFeed) oldest(ctx context.Context) (bson.Timestamp, bool, error) {
	raw, err := f.oplog.FindOne(ctx, bson.D{}, options.FindOne().SetProjection(bson.D{{Key: "ts", Value: 1}})).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return bson.Timestamp{}, false, nil
	}
	if err != nil {
		return bson.Timestamp{}, false, mongox.Errf(err, "read the oldest oplog entry")
	}
	t, i, ok := raw.Lookup("ts").TimestampOK()
	if !ok {
		return bson.Timestamp{}, false, errs.New(errs.Internal, "the oldest oplog entry has no timestamp")
	}
	return bson.Timestamp{T: t, I: i}, true, nil
}

// Subscribe implements Feed.
func (f *OplogFeed) Subscribe(ctx context.Context, o SubscribeOptions) (Subscription, error) {
	if len(o.Namespaces) == 0 {
		return nil, errs.Invalid("namespaces", "a subscription needs at least one namespace")
	}
	from := o.From
	if from.IsZero() {
		p, err := f.Latest(ctx, o.Namespaces...)
		if err != nil {
			return nil, err
		}
		from = p
	}
	if from.mode != ModeOplog {
		return nil, errs.Invalid("revision", "position %s is not an oplog position", from)
	}
	limit := o.Buffer
	if limit <= 0 {
		limit = f.opts.Buffer
	}
	s := &oplogSub{
		feed:   f,
		nss:    append([]Namespace(nil), o.Namespaces...),
		from:   from,
		last:   from,
		lookup: o.LookupUpdates,
		limit:  limit,
		signal: make(chan struct{}, 1),
	}
	checked := false
	for {
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			return nil, closedErr()
		}
		if !f.started {
			if from.ts.IsZero() {
				// A position from an empty oplog is good while it is still
				// empty; the tailer then sees every entry from the first.
				f.mu.Unlock()
				_, nonEmpty, err := f.newest(ctx)
				if err != nil {
					return nil, err
				}
				if nonEmpty {
					return nil, expired("position %s is from an empty oplog that has entries now", from)
				}
				f.mu.Lock()
				if !f.started && !f.closed {
					f.startLocked(from, true)
				}
				f.mu.Unlock()
				continue
			}
			// The subscription starts the tailer at its position; the
			// tailer expires it if the oplog no longer holds that entry.
			f.startLocked(Position{mode: ModeOplog, ts: from.ts}, false)
		}
		c := compareOplog(from, f.pos)
		switch {
		case c == 0, c > 0 && checked:
			f.subs[s] = struct{}{}
			f.mu.Unlock()
			return s, nil
		case c < 0 && f.hist.covers(from):
			f.subs[s] = struct{}{}
			f.hist.replay(s)
			f.mu.Unlock()
			return s, nil
		case c < 0 && checked:
			s.catch = &catchup{feed: f, sub: s, from: from, upTo: f.pos}
			f.subs[s] = struct{}{}
			f.mu.Unlock()
			return s, nil
		}
		f.mu.Unlock()
		// A position ahead of the tailer, or older than its history: make
		// sure the oplog still holds it, then look again.
		ok, err := f.exists(ctx, from)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, expired("position %s is older than the oplog", from)
		}
		checked = true
	}
}

// remove unregisters s.
func (f *OplogFeed) remove(s *oplogSub) {
	f.mu.Lock()
	delete(f.subs, s)
	f.mu.Unlock()
}

// position returns the tailer's position.
func (f *OplogFeed) position() Position {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pos
}

// Close implements Feed: it ends every subscription and waits for the
// tailer to stop (or ctx to end).
func (f *OplogFeed) Close(ctx context.Context) error {
	f.mu.Lock()
	if !f.closed {
		f.closed = true
		for s := range f.subs {
			s.fail(closedErr())
		}
		f.subs = map[*oplogSub]struct{}{}
	}
	f.mu.Unlock()
	f.cancel()
	done := make(chan struct{})
	go func() {
		f.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return errs.Wrap(errs.DeadlineExceeded, ctx.Err(), "wait for the oplog tailer to stop")
	}
}

// startLocked starts the tailer at pos; f.mu is held.
func (f *OplogFeed) startLocked(pos Position, fromEmpty bool) {
	f.started = true
	f.pos = pos
	f.fromEmpty = fromEmpty
	f.firstTS = bson.Timestamp{}
	f.lastUse = time.Now()
	f.hist.reset(pos)
	f.wg.Add(1)
	go f.run()
}

// Errors of one tailing attempt that run handles.
var (
	errGap   = errors.New("the oplog no longer holds the tailer's position")
	errEmpty = errors.New("the oplog is empty")
	errIdle  = errors.New("the tailer is idle")
)

// run is the tailer: it reads the oplog from f.pos and fans entries out,
// reopening the cursor whenever it dies, until the feed closes or the
// tailer idles.
func (f *OplogFeed) run() {
	defer f.wg.Done()
	backoff := f.opts.RetryMin
	for f.ctx.Err() == nil {
		read, err := f.tail()
		if f.ctx.Err() != nil {
			return
		}
		if errors.Is(err, errIdle) {
			return
		}
		if read > 0 {
			backoff = f.opts.RetryMin
		}
		var wait time.Duration
		switch {
		case errors.Is(err, errGap):
			f.report(err)
			if rerr := f.restartAfterGap(); rerr != nil {
				f.report(rerr)
				wait, backoff = backoff, min(2*backoff, f.opts.RetryMax)
			}
		case errors.Is(err, errEmpty):
			wait = f.opts.EmptyPoll
			if f.stopIfIdle() {
				return
			}
		case err != nil:
			f.report(err)
			wait, backoff = backoff, min(2*backoff, f.opts.RetryMax)
		case read == 0:
			// The cursor died without news (an exhausted capped
			// collection): do not spin.
			wait = f.opts.EmptyPoll
		}
		if wait > 0 && !f.pause(wait) {
			return
		}
	}
}

// pause waits d, or less when a barrier wakes the tailer; false when the
// feed closed.
func (f *OplogFeed) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-f.ctx.Done():
		return false
	case <-f.wake:
		return true
	case <-t.C:
		return true
	}
}

// stopIfIdle ends the tailer when it has had no subscription nor use for
// IdleTimeout; the next use starts it again.
func (f *OplogFeed) stopIfIdle() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.subs) > 0 || time.Since(f.lastUse) < f.opts.IdleTimeout {
		return false
	}
	f.started = false
	f.posAt = time.Now()
	f.hist.reset(f.pos)
	return true
}

func (f *OplogFeed) report(err error) {
	if f.opts.OnError != nil && err != nil {
		f.opts.OnError(err)
	}
}

// restartAfterGap expires every subscription (their next changes are
// lost) and moves the tailer to the newest entry.
func (f *OplogFeed) restartAfterGap() error {
	ts, ok, err := f.newest(f.ctx)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.subs {
		s.fail(expired("the oplog moved past this subscription's position"))
	}
	f.subs = map[*oplogSub]struct{}{}
	f.pos = OplogPosition(ts)
	f.fromEmpty = !ok
	f.firstTS = bson.Timestamp{}
	f.hist.reset(f.pos)
	return nil
}

// beginPoll counts a poll that is about to start.
func (f *OplogFeed) beginPoll() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pollsStarted++
	return f.pollsStarted
}

// pollFoundNothing records that poll seq came back empty.
func (f *OplogFeed) pollFoundNothing(seq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if seq > f.caughtUp {
		f.caughtUp = seq
		close(f.caughtUpCh)
		f.caughtUpCh = make(chan struct{})
	}
}

// tail opens a tailable cursor at the tailer's position and fans out what
// it reads until the cursor dies or fails. It returns how many new entries
// it read.
func (f *OplogFeed) tail() (int, error) {
	pos := f.position()
	fromStart := pos.ts.IsZero()
	filter := bson.D{}
	if !fromStart {
		filter = bson.D{{Key: "ts", Value: bson.D{{Key: "$gte", Value: pos.ts}}}}
	}
	// The first batch holds one entry (the one at pos, which proves the
	// position is still there): a tailable cursor whose first batch is
	// short of its batch size dies at once on FerretDB.
	fo := options.Find().SetBatchSize(1)
	if f.poll {
		fo.SetCursorType(options.Tailable)
	} else {
		fo.SetCursorType(options.TailableAwait).SetMaxAwaitTime(f.opts.MaxAwaitTime)
	}
	cur, err := f.oplog.Find(f.ctx, filter, fo)
	if err != nil {
		return 0, mongox.Errf(err, "open the oplog cursor")
	}
	defer closeCursor(f.ctx, cur)
	seen, read := 0, 0
	var batch []entry
	interval := f.opts.PollInterval
	var seq uint64
	var began time.Time
	polled := -1 // entries the last poll returned
	lastNews := time.Now()
	for {
		if f.poll && cur.RemainingBatchLength() == 0 {
			// The next TryNext polls. After a short batch the server has
			// nothing more in hand: pause as after an empty poll, so that
			// a steady trickle of writes does not make the tailer re-read
			// the oplog back to back.
			if polled > 0 && polled < int(f.opts.BatchSize) && !f.pause(interval) {
				return read, nil
			}
			seq, began, polled = f.beginPoll(), time.Now(), 0
		}
		if !cur.TryNext(f.ctx) {
			if err := cur.Err(); err != nil {
				return read, mongox.Errf(err, "read the oplog")
			}
			if cur.ID() == 0 {
				switch {
				case seen > 0:
					return read, nil
				case fromStart:
					return 0, errEmpty
				default:
					return 0, errGap
				}
			}
			if !f.poll {
				if f.stopIfIdle() {
					return read, errIdle
				}
				// An empty awaitData getMore. Reopen now and then: a cursor
				// can stop seeing new entries on FerretDB (see
				// ReopenInterval).
				if f.opts.ReopenInterval > 0 && time.Since(lastNews) > f.opts.ReopenInterval {
					return read, nil
				}
				continue
			}
			// A poll that found nothing: the tailer is caught up.
			f.pollFoundNothing(seq)
			if f.stopIfIdle() {
				return read, errIdle
			}
			if took := time.Since(began); took > interval {
				interval = min(took, time.Second) // leave the server time for other work
			} else {
				interval = max(f.opts.PollInterval, interval*3/4)
			}
			if !f.pause(interval) {
				return read, nil
			}
			continue
		}
		seen++
		polled++
		lastNews = time.Now()
		raw := bson.Raw(append([]byte(nil), cur.Current...))
		e, perr := parseEntry(raw)
		if perr != nil {
			f.report(perr)
			if e.ts.IsZero() {
				continue
			}
		}
		if seen == 1 {
			cur.SetBatchSize(f.opts.BatchSize)
			if !fromStart {
				if e.ts != pos.ts {
					return 0, fmt.Errorf("%w: wanted entry %d.%d, the oldest from there is %d.%d", errGap, pos.ts.T, pos.ts.I, e.ts.T, e.ts.I)
				}
				continue // already fanned out
			}
		}
		batch = append(batch, e)
		read++
		if cur.RemainingBatchLength() == 0 {
			f.apply(batch, fromStart)
			clear(batch)
			batch = batch[:0]
			fromStart = false
		}
	}
}

// apply fans entries out to the subscriptions and records them.
func (f *OplogFeed) apply(batch []entry, fromStart bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	for i, e := range batch {
		if fromStart && i == 0 && f.fromEmpty && f.firstTS.IsZero() {
			f.firstTS = e.ts
		}
		if c := compareTS(e.ts, f.pos.ts); c <= 0 && !(f.pos.ts.IsZero() && f.fromEmpty) {
			continue // never fan out an entry twice
		}
		for _, ev := range e.events {
			for s := range f.subs {
				s.push(ev)
			}
		}
		f.hist.add(e)
		f.pos = OplogPosition(e.ts)
	}
}

// oplogSub is one subscription of an OplogFeed.
type oplogSub struct {
	feed   *OplogFeed
	nss    []Namespace
	from   Position // events at or before it are not delivered
	lookup bool
	limit  int
	signal chan struct{}

	mu    sync.Mutex
	queue []Event
	head  int
	err   error // terminal: expired, closed

	// Used only by the goroutine calling Next and Position.
	catch   *catchup
	pending *Event // popped but not yet returned (its lookup failed)
	last    Position
}

// wants reports whether ev is for s and after its start.
func (s *oplogSub) wants(ev Event) bool {
	if compareOplog(ev.Position, s.from) <= 0 {
		return false
	}
	for _, n := range s.nss {
		if n.covers(ev.Namespace) {
			return true
		}
	}
	return false
}

// push queues ev if s wants it; f.mu is held. A full queue expires s.
func (s *oplogSub) push(ev Event) {
	if !s.wants(ev) {
		return
	}
	s.mu.Lock()
	if s.err == nil {
		if len(s.queue)-s.head >= s.limit {
			s.err = expired("the subscriber fell behind by more than %d events", s.limit)
			s.queue, s.head = nil, 0
		} else {
			s.queue = append(s.queue, ev)
		}
	}
	s.mu.Unlock()
	s.notify()
}

func (s *oplogSub) notify() {
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// fail ends s with err (the first error wins).
func (s *oplogSub) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
		s.queue, s.head = nil, 0
	}
	s.mu.Unlock()
	s.notify()
}

// Next implements Subscription.
func (s *oplogSub) Next(ctx context.Context) (Event, error) {
	for {
		if s.pending != nil {
			return s.deliver(ctx, *s.pending)
		}
		s.mu.Lock()
		err := s.err
		s.mu.Unlock()
		if err != nil {
			return Event{}, err
		}
		if s.catch != nil {
			ev, ok, err := s.catch.next(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.catch.close()
					s.catch = nil
					s.fail(err)
				}
				return Event{}, err
			}
			if ok {
				return s.deliver(ctx, ev)
			}
			s.catch.close()
			s.catch = nil
			continue
		}
		s.mu.Lock()
		if s.head < len(s.queue) {
			ev := s.queue[s.head]
			s.queue[s.head] = Event{}
			s.head++
			if s.head == len(s.queue) {
				s.queue, s.head = s.queue[:0], 0
			}
			s.mu.Unlock()
			return s.deliver(ctx, ev)
		}
		s.mu.Unlock()
		select {
		case <-s.signal:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		}
	}
}

// deliver completes ev (looking up its document when asked) and returns
// it; when the lookup fails, ev stays pending for the next call.
func (s *oplogSub) deliver(ctx context.Context, ev Event) (Event, error) {
	if s.lookup && ev.Op == OpUpdate && ev.Document == nil {
		doc, err := lookup(ctx, s.feed.client, ev)
		if err != nil {
			s.pending = &ev
			return Event{}, err
		}
		ev.Document = doc
	}
	s.pending = nil
	s.last = ev.Position
	return ev, nil
}

// Position implements Subscription.
func (s *oplogSub) Position() Position {
	p := s.feed.position() // read before looking at the queue: see push
	s.mu.Lock()
	idle := s.head == len(s.queue) && s.err == nil
	s.mu.Unlock()
	out := s.last
	if idle && s.catch == nil && s.pending == nil && compareOplog(p, out) > 0 {
		out = p
	}
	return out
}

// Close implements Subscription.
func (s *oplogSub) Close() error {
	s.feed.remove(s)
	s.fail(closedErr())
	if s.catch != nil {
		s.catch.close()
	}
	return nil
}

// lookup reads the document an update event is about; nil when it is gone.
func lookup(ctx context.Context, client *mongo.Client, ev Event) (bson.Raw, error) {
	coll := client.Database(ev.Namespace.DB).Collection(ev.Namespace.Coll)
	raw, err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: ev.ID}}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	if err != nil {
		return nil, mongox.Errf(err, "look up %s %s", ev.Namespace, ev.ID)
	}
	return raw, nil
}

// catchup reads a subscription's changes from the oplog itself, for a
// start position older than the tailer's history, up to where the tailer
// was when the subscription joined; the live events queue behind it.
type catchup struct {
	feed     *OplogFeed
	sub      *oplogSub
	from     Position
	upTo     Position
	cur      *mongo.Cursor
	buf      []Event
	finished bool
}

// next returns the next caught-up event; ok is false when there are no
// more.
func (c *catchup) next(ctx context.Context) (Event, bool, error) {
	for {
		if len(c.buf) > 0 {
			ev := c.buf[0]
			c.buf = c.buf[1:]
			return ev, true, nil
		}
		if c.finished {
			return Event{}, false, nil
		}
		if c.cur == nil {
			nss := make([]string, len(c.sub.nss))
			for i, n := range c.sub.nss {
				nss[i] = n.String()
			}
			filter := bson.D{
				{Key: "ts", Value: bson.D{{Key: "$gte", Value: c.from.ts}, {Key: "$lte", Value: c.upTo.ts}}},
				{Key: "$or", Value: bson.A{
					bson.D{{Key: "ns", Value: bson.D{{Key: "$in", Value: nss}}}},
					bson.D{{Key: "op", Value: "c"}},
				}},
			}
			cur, err := c.feed.oplog.Find(ctx, filter, options.Find().SetBatchSize(c.feed.opts.BatchSize))
			if err != nil {
				return Event{}, false, mongox.Errf(err, "read the oplog from %s", c.from)
			}
			c.cur = cur
		}
		if c.cur.Next(ctx) {
			e, err := parseEntry(bson.Raw(append([]byte(nil), c.cur.Current...)))
			if err != nil {
				c.feed.report(err)
			}
			for _, ev := range e.events {
				if c.sub.wants(ev) && compareOplog(ev.Position, c.upTo) <= 0 {
					c.buf = append(c.buf, ev)
				}
			}
			continue
		}
		if err := c.cur.Err(); err != nil {
			return Event{}, false, mongox.Errf(err, "read the oplog from %s", c.from)
		}
		c.close()
		c.finished = true
		// Entries are removed oldest first: if the start is still there,
		// nothing after it went missing while we read.
		ok, err := c.feed.exists(ctx, c.from)
		if err != nil {
			return Event{}, false, err
		}
		if !ok {
			c.buf = nil
			return Event{}, false, expired("position %s left the oplog while it was read", c.from)
		}
	}
}

func (c *catchup) close() {
	if c.cur != nil {
		closeCursor(c.feed.ctx, c.cur)
		c.cur = nil
	}
}

// history keeps the tailer's recent entries so that a subscription from a
// recent position starts without reading the oplog.
type history struct {
	maxEntries int
	maxBytes   int
	entries    []entry // ring
	start, n   int
	bytes      int
	base       Position // every entry after base is held
}

func (h *history) reset(base Position) {
	clear(h.entries)
	h.start, h.n, h.bytes = 0, 0, 0
	h.base = base
}

func (h *history) add(e entry) {
	if len(e.events) == 0 {
		return // nothing to replay
	}
	if h.entries == nil {
		h.entries = make([]entry, h.maxEntries)
	}
	for h.n > 0 && (h.n == h.maxEntries || h.bytes+e.size > h.maxBytes) {
		old := h.entries[h.start]
		h.base = OplogPosition(old.ts)
		h.bytes -= old.size
		h.entries[h.start] = entry{}
		h.start = (h.start + 1) % h.maxEntries
		h.n--
	}
	if e.size > h.maxBytes {
		h.base = OplogPosition(e.ts)
		return
	}
	h.entries[(h.start+h.n)%h.maxEntries] = e
	h.n++
	h.bytes += e.size
}

// covers reports whether every entry after p is held.
func (h *history) covers(p Position) bool { return compareOplog(h.base, p) <= 0 }

// replay queues the held events after s's start for s.
func (h *history) replay(s *oplogSub) {
	for k := 0; k < h.n; k++ {
		for _, ev := range h.entries[(h.start+k)%h.maxEntries].events {
			s.push(ev)
		}
	}
}

// closeCursor closes cur and kills it on the server, also when the feed is
// closing: a cursor left open on FerretDB keeps its query open, and the
// server's other readers may then keep seeing the data as it was.
func closeCursor(_ context.Context, cur *mongo.Cursor) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = cur.Close(ctx)
}
