package changes

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongox"
)

// ChangeStreamFeed is a Feed over MongoDB change streams: each
// subscription opens one stream over its namespaces (a collection stream
// for one collection, a database stream filtered by collection for several
// in one database, a cluster stream otherwise). Positions are resume
// tokens; a subscription resumes after an invalidate with startAfter and
// after a transient error from its last token. A resume point the server's
// oplog no longer holds (ChangeStreamHistoryLost) expires the subscription.
type ChangeStreamFeed struct {
	client *mongo.Client
	opts   Options

	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	subs   map[*csSub]struct{}
}

// NewChangeStream returns a change-stream feed over client.
func NewChangeStream(client *mongo.Client, opts Options) *ChangeStreamFeed {
	ctx, cancel := context.WithCancel(context.Background())
	return &ChangeStreamFeed{client: client, opts: opts.withDefaults(), ctx: ctx, cancel: cancel, subs: map[*csSub]struct{}{}}
}

// Mode implements Feed.
func (f *ChangeStreamFeed) Mode() Mode { return ModeChangeStream }

// Current implements Feed: it opens a stream over nss and returns the
// resume token the server reports for its (empty) first batch.
func (f *ChangeStreamFeed) Current(ctx context.Context, nss ...Namespace) (Position, error) {
	if len(nss) == 0 {
		return Position{}, errs.Invalid("namespaces", "a change stream needs at least one namespace")
	}
	cs, err := f.open(ctx, nss, Position{}, false)
	if err != nil {
		return Position{}, err
	}
	defer func() { _ = cs.Close(context.WithoutCancel(ctx)) }()
	tok := cs.ResumeToken()
	if tok == nil {
		// Servers before 4.0.7 send no token with the first batch; wait for
		// one getMore to get one.
		if cs.TryNext(ctx) {
			tok = cs.ResumeToken()
		}
		if tok == nil {
			return Position{}, errs.New(errs.Unimplemented, "the server reports no resume token for an idle change stream")
		}
	}
	return TokenPosition(append(bson.Raw(nil), tok...)), nil
}

// Latest implements Feed; for change streams it is Current.
func (f *ChangeStreamFeed) Latest(ctx context.Context, nss ...Namespace) (Position, error) {
	return f.Current(ctx, nss...)
}

// open opens a stream over nss starting after from (now when zero).
func (f *ChangeStreamFeed) open(ctx context.Context, nss []Namespace, from Position, lookup bool) (*mongo.ChangeStream, error) {
	o := options.ChangeStream().SetBatchSize(f.opts.BatchSize).SetMaxAwaitTime(f.opts.MaxAwaitTime)
	if lookup {
		o.SetFullDocument(options.UpdateLookup)
	}
	if tok := from.ResumeToken(); tok != nil {
		// startAfter, unlike resumeAfter, also resumes after an invalidate.
		o.SetStartAfter(tok)
	}
	var (
		cs  *mongo.ChangeStream
		err error
	)
	sameDB := true
	for _, n := range nss[1:] {
		sameDB = sameDB && n.DB == nss[0].DB
	}
	switch {
	case len(nss) == 1:
		cs, err = f.client.Database(nss[0].DB).Collection(nss[0].Coll).Watch(ctx, mongo.Pipeline{}, o)
	case sameDB:
		colls := make(bson.A, len(nss))
		for i, n := range nss {
			colls[i] = n.Coll
		}
		match := bson.D{{Key: "$match", Value: bson.D{{Key: "ns.coll", Value: bson.D{{Key: "$in", Value: colls}}}}}}
		cs, err = f.client.Database(nss[0].DB).Watch(ctx, mongo.Pipeline{match}, o)
	default:
		or := make(bson.A, len(nss))
		for i, n := range nss {
			or[i] = bson.D{{Key: "ns.db", Value: n.DB}, {Key: "ns.coll", Value: n.Coll}}
		}
		match := bson.D{{Key: "$match", Value: bson.D{{Key: "$or", Value: or}}}}
		cs, err = f.client.Watch(ctx, mongo.Pipeline{match}, o)
	}
	if err != nil {
		return nil, streamErr(err, from)
	}
	return cs, nil
}

// streamErr maps a change-stream error; a lost resume point expires.
func streamErr(err error, from Position) error {
	if mongox.HasCode(err, mongox.CodeChangeStreamHistoryLost) || mongox.HasCode(err, mongox.CodeChangeStreamFatalError) {
		return errs.Wrap(errs.OutOfRange, errors.Join(ErrExpired, err), "change stream position %s is no longer in the oplog", from)
	}
	return mongox.Errf(err, "change stream")
}

// Subscribe implements Feed. The stream opens before Subscribe returns, so
// a lost position is reported here.
func (f *ChangeStreamFeed) Subscribe(ctx context.Context, o SubscribeOptions) (Subscription, error) {
	if len(o.Namespaces) == 0 {
		return nil, errs.Invalid("namespaces", "a subscription needs at least one namespace")
	}
	if !o.From.IsZero() && o.From.mode != ModeChangeStream {
		return nil, errs.Invalid("revision", "position %s is not a change-stream position", o.From)
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil, closedErr()
	}
	f.mu.Unlock()
	cs, err := f.open(ctx, o.Namespaces, o.From, o.LookupUpdates)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(f.ctx)
	s := &csSub{
		feed:   f,
		nss:    append([]Namespace(nil), o.Namespaces...),
		lookup: o.LookupUpdates,
		ctx:    sctx,
		cancel: cancel,
		cs:     cs,
		last:   o.From,
	}
	if o.From.IsZero() {
		// A new stream starts now: the token of its (empty) first batch is
		// its position. A resumed one may hold undelivered events in its
		// first batch, so it stays at From until Next returns them.
		if tok := cs.ResumeToken(); tok != nil {
			s.last = TokenPosition(append(bson.Raw(nil), tok...))
		}
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		cancel()
		_ = cs.Close(context.WithoutCancel(ctx))
		return nil, closedErr()
	}
	f.subs[s] = struct{}{}
	f.mu.Unlock()
	return s, nil
}

// Close implements Feed.
func (f *ChangeStreamFeed) Close(ctx context.Context) error {
	f.mu.Lock()
	f.closed = true
	subs := f.subs
	f.subs = map[*csSub]struct{}{}
	f.mu.Unlock()
	f.cancel()
	for s := range subs {
		s.closeStream(ctx)
	}
	return nil
}

// csSub is one change-stream subscription.
type csSub struct {
	feed   *ChangeStreamFeed
	nss    []Namespace
	lookup bool
	ctx    context.Context // the stream's lifetime: getMores use it, never a caller's
	cancel context.CancelFunc

	mu     sync.Mutex // held while the stream is used, so that Close never races it
	cs     *mongo.ChangeStream
	closed bool

	// Used only by the goroutine calling Next and Position.
	last Position
	err  error // terminal
}

// Next implements Subscription. Each getMore waits at most the feed's
// MaxAwaitTime, so ctx's end is noticed within that.
func (s *csSub) Next(ctx context.Context) (Event, error) {
	backoff := s.feed.opts.RetryMin
	for {
		if s.err != nil {
			return Event{}, s.err
		}
		if s.ctx.Err() != nil {
			return Event{}, closedErr()
		}
		if err := ctx.Err(); err != nil {
			return Event{}, err
		}
		ev, ok, err := s.step()
		switch {
		case ok:
			return ev, nil
		case err == nil:
			continue
		case IsExpired(err) || IsClosed(err):
			if IsExpired(err) {
				s.err = err
			}
			return Event{}, err
		case errs.CodeOf(err) != errs.Unavailable && errs.CodeOf(err) != errs.DeadlineExceeded:
			s.err = err
			return Event{}, err
		}
		s.feed.report(err)
		if !sleepCtx(ctx, s.ctx, backoff) {
			return Event{}, ctxOrClosed(ctx)
		}
		backoff = min(2*backoff, s.feed.opts.RetryMax)
	}
}

// step does one thing with the stream under s.mu (so that Close never
// races a getMore): opens it if needed, or waits for one batch. It returns
// an event (ok), nothing (nil error: try again), or an error.
func (s *csSub) step() (Event, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Event{}, false, closedErr()
	}
	if s.cs == nil {
		// Reopen after an invalidate or a failure, from the last token.
		cs, err := s.feed.open(s.ctx, s.nss, s.last, s.lookup)
		if err != nil {
			if s.ctx.Err() != nil {
				return Event{}, false, closedErr()
			}
			return Event{}, false, err
		}
		s.cs = cs
	}
	cs := s.cs
	if cs.TryNext(s.ctx) {
		ev, err := s.parse(cs.Current)
		if tok := cs.ResumeToken(); tok != nil {
			ev.Position = TokenPosition(append(bson.Raw(nil), tok...))
		}
		s.last = ev.Position
		if err != nil {
			s.feed.report(err)
			return Event{}, false, nil
		}
		if ev.Op == OpInvalidate {
			// The stream ends after an invalidate; the next step opens a
			// new one after it (startAfter).
			s.dropLocked()
		}
		return ev, true, nil
	}
	if err := cs.Err(); err != nil {
		s.dropLocked()
		if s.ctx.Err() != nil {
			return Event{}, false, closedErr()
		}
		return Event{}, false, streamErr(err, s.last)
	}
	if tok := cs.ResumeToken(); tok != nil {
		s.last = TokenPosition(append(bson.Raw(nil), tok...))
	}
	if cs.ID() == 0 {
		s.dropLocked()
	}
	return Event{}, false, nil
}

// parse turns a change event into an Event (its Position is set by Next).
func (s *csSub) parse(doc bson.Raw) (Event, error) {
	var ev Event
	opType, _ := doc.Lookup("operationType").StringValueOK()
	if nsDoc, ok := doc.Lookup("ns").DocumentOK(); ok {
		ev.Namespace.DB, _ = nsDoc.Lookup("db").StringValueOK()
		ev.Namespace.Coll, _ = nsDoc.Lookup("coll").StringValueOK()
	}
	if v, err := doc.LookupErr("wallTime"); err == nil {
		if dt, ok := v.DateTimeOK(); ok {
			ev.Time = time.UnixMilli(dt).UTC()
		}
	}
	switch opType {
	case "insert":
		ev.Op = OpInsert
	case "update":
		ev.Op = OpUpdate
	case "replace":
		ev.Op = OpReplace
	case "delete":
		ev.Op = OpDelete
	case "invalidate", "drop", "rename", "dropDatabase":
		ev.Op = OpInvalidate
		if opType == "invalidate" && ev.Namespace.DB == "" && len(s.nss) > 0 {
			ev.Namespace = s.nss[0]
		}
		return ev, nil
	default:
		return ev, errs.New(errs.Internal, "unhandled change event %q", opType)
	}
	if key, ok := doc.Lookup("documentKey").DocumentOK(); ok {
		if id, err := key.LookupErr("_id"); err == nil {
			ev.ID = cloneValue(id)
		}
	}
	if full, ok := doc.Lookup("fullDocument").DocumentOK(); ok {
		ev.Document = append(bson.Raw(nil), full...)
	}
	return ev, nil
}

func cloneValue(v bson.RawValue) bson.RawValue {
	v.Value = append([]byte(nil), v.Value...)
	return v
}

// dropLocked closes the stream; s.mu is held.
func (s *csSub) dropLocked() {
	if s.cs != nil {
		_ = s.cs.Close(context.WithoutCancel(s.ctx))
		s.cs = nil
	}
}

// Position implements Subscription.
func (s *csSub) Position() Position { return s.last }

// Close implements Subscription.
func (s *csSub) Close() error {
	s.feed.mu.Lock()
	delete(s.feed.subs, s)
	s.feed.mu.Unlock()
	s.closeStream(context.Background())
	return nil
}

func (s *csSub) closeStream(ctx context.Context) {
	s.cancel() // makes a getMore in progress return
	s.mu.Lock()
	s.closed = true
	cs := s.cs
	s.cs = nil
	s.mu.Unlock()
	if cs != nil {
		_ = cs.Close(ctx)
	}
}

func (f *ChangeStreamFeed) report(err error) {
	if f.opts.OnError != nil && err != nil {
		f.opts.OnError(err)
	}
}

// sleepCtx waits d unless either context ends first.
func sleepCtx(a, b context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-a.Done():
		return false
	case <-b.Done():
		return false
	}
}

func ctxOrClosed(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return closedErr()
}
