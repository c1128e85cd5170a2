package changes

import (
	"context"
	"errors"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongox"
)

// Feed delivers the changes of collections to subscribers. Its methods are
// safe for concurrent use.
type Feed interface {
	// Mode returns how the feed learns of changes.
	Mode() Mode
	// Current returns a position from which a subscription delivers every
	// change made to nss after Current was called. It may lie a little
	// before the call (the subscription then also delivers some changes
	// made just before it); in exchange it is cheap while the feed runs.
	Current(ctx context.Context, nss ...Namespace) (Position, error)
	// Latest returns the position of now for nss: a subscription from it
	// delivers every change made after the call and none completed before
	// it (changes concurrent with the call may go either way).
	Latest(ctx context.Context, nss ...Namespace) (Position, error)
	// Subscribe starts a subscription to the changes of opts.Namespaces
	// after opts.From. A position of another mode or a malformed one is
	// errs.InvalidArgument. A position the feed no longer holds expires
	// the subscription: Subscribe, or else its first Next, returns an
	// error for which IsExpired is true.
	Subscribe(ctx context.Context, opts SubscribeOptions) (Subscription, error)
	// Close ends every subscription and stops the feed's goroutines.
	Close(ctx context.Context) error
}

// SubscribeOptions select what a subscription delivers.
type SubscribeOptions struct {
	// Namespaces are the collections to watch; at least one.
	Namespaces []Namespace
	// From is the position to continue after; zero means Latest.
	From Position
	// LookupUpdates asks for Event.Document on updates whose log entry
	// holds only a diff (real MongoDB): the subscription reads the
	// document by _id.
	LookupUpdates bool
	// Buffer is the most events queued for the subscription before it
	// expires for falling behind; 0 means the feed's Options.Buffer.
	Buffer int
}

// Subscription is one subscriber's stream of events. Next and Position are
// for one goroutine; Close may be called from any.
type Subscription interface {
	// Next returns the next event, waiting until there is one or ctx ends
	// (then it returns ctx's error and the subscription stays usable). An
	// error for which IsExpired is true means the subscriber fell too far
	// behind or its position left the log: it must read its state again.
	// After Close, or after the feed closed, Next returns an error for
	// which IsClosed is true.
	Next(ctx context.Context) (Event, error)
	// Position returns the position up to which every change has been
	// returned by Next: the last event's position, or later when the feed
	// has moved on without changes for this subscriber.
	Position() Position
	// Close ends the subscription.
	Close() error
}

// Defaults of Options.
const (
	// DefaultMaxAwaitTime is how long one getMore waits for new entries.
	DefaultMaxAwaitTime = time.Second
	// DefaultBatchSize is the getMore batch size of tailing cursors.
	DefaultBatchSize = 1000
	// DefaultBuffer is the most events queued for one subscription.
	DefaultBuffer = 10000
	// DefaultRetryMin and DefaultRetryMax bound the backoff between
	// attempts to reopen a failed cursor or stream.
	DefaultRetryMin = 50 * time.Millisecond
	DefaultRetryMax = 2 * time.Second
	// DefaultEmptyPoll is how often an empty oplog is polled.
	DefaultEmptyPoll = 20 * time.Millisecond
	// DefaultHistory bounds the recent oplog entries a tailer keeps in
	// memory to start subscriptions from a recent position without reading
	// the oplog again.
	DefaultHistory = 4096
	// DefaultPollInterval is the shortest pause between two polls of the
	// oplog when the tailer polls (FerretDB).
	DefaultPollInterval = 10 * time.Millisecond
	// DefaultIdleTimeout is how long the tailer runs without subscriptions
	// or calls of Current and Latest before it stops.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultReopenInterval is Options.ReopenInterval's default.
	DefaultReopenInterval = 5 * time.Second
	// DefaultCurrentMaxAge is Options.CurrentMaxAge's default.
	DefaultCurrentMaxAge = time.Minute
	// DefaultBarrierTimeout bounds how long Latest waits for the polling
	// tailer to catch up before it reads the newest entry itself.
	DefaultBarrierTimeout = 2 * time.Second
)

// Options tune a feed. The zero value of every field selects its default.
type Options struct {
	// MaxAwaitTime is how long one getMore on a tailing cursor or change
	// stream waits for new changes; it bounds how soon a change-stream
	// subscription's Next notices that its context ended.
	MaxAwaitTime time.Duration
	// BatchSize is the batch size of getMore on tailing cursors and
	// change streams.
	BatchSize int32
	// Buffer is the default of SubscribeOptions.Buffer.
	Buffer int
	// RetryMin and RetryMax bound the backoff between attempts to reopen
	// a failed cursor or stream.
	RetryMin, RetryMax time.Duration
	// EmptyPoll is how often the oplog tailer polls an empty oplog.
	EmptyPoll time.Duration
	// History is how many recent oplog entries the tailer keeps in memory.
	History int
	// PollInterval, when positive, makes the oplog tailer poll with a
	// plain tailable cursor, waiting at least this long (and at least as
	// long as the last poll took) between polls that find nothing, instead
	// of using a tailable awaitData cursor. Use it with FerretDB reached
	// directly: its awaitData re-runs the whole oplog query every 10 ms and
	// returns an empty batch once one run outlasts the wait. Capstan's
	// embedded server answers awaitData itself, waking on writes, and
	// needs no polling; neither does MongoDB.
	PollInterval time.Duration
	// IdleTimeout is how long the oplog tailer keeps running without
	// subscriptions or calls of Current and Latest.
	IdleTimeout time.Duration
	// ReopenInterval is how long the oplog tailer keeps an awaitData
	// cursor that brings nothing new before it opens a new one from the
	// same position: through FerretDB a cursor has been seen to stop
	// returning entries that a new query finds. Default
	// DefaultReopenInterval; negative never reopens.
	ReopenInterval time.Duration
	// CurrentMaxAge is how long the oplog feed's Current keeps answering,
	// while no tailer runs, with a position it learned earlier (if the
	// oplog still holds it) instead of reading the newest entry, which on
	// FerretDB reads the whole oplog.
	CurrentMaxAge time.Duration
	// OnError, if set, is told of errors the feed recovers from by
	// retrying (a server restart, a dead cursor).
	OnError func(error)
}

func (o Options) withDefaults() Options {
	if o.MaxAwaitTime <= 0 {
		o.MaxAwaitTime = DefaultMaxAwaitTime
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.Buffer <= 0 {
		o.Buffer = DefaultBuffer
	}
	if o.RetryMin <= 0 {
		o.RetryMin = DefaultRetryMin
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(DefaultRetryMax, o.RetryMin)
	}
	if o.EmptyPoll <= 0 {
		o.EmptyPoll = DefaultEmptyPoll
	}
	if o.History <= 0 {
		o.History = DefaultHistory
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.CurrentMaxAge <= 0 {
		o.CurrentMaxAge = DefaultCurrentMaxAge
	}
	if o.ReopenInterval == 0 {
		o.ReopenInterval = DefaultReopenInterval
	}
	return o
}

// ErrExpired is the cause of the errors that say a position is gone: older
// than the log holds, or a subscriber fell too far behind. Such errors
// have code errs.OutOfRange.
var ErrExpired = errors.New("change feed position is no longer available")

// ErrClosed is the cause of the errors of a closed feed or subscription.
// Such errors have code errs.Canceled.
var ErrClosed = errors.New("change feed closed")

// IsExpired reports whether err says a position is gone.
func IsExpired(err error) bool { return errors.Is(err, ErrExpired) }

// IsClosed reports whether err says the feed or subscription was closed.
func IsClosed(err error) bool { return errors.Is(err, ErrClosed) }

func expired(format string, args ...any) error {
	return errs.Wrap(errs.OutOfRange, ErrExpired, format, args...)
}

func closedErr() error { return errs.Wrap(errs.Canceled, ErrClosed, "subscription closed") }

// New returns a feed of the given mode over client; ModeAuto detects it
// (Detect). The feed does not own client.
func New(ctx context.Context, client *mongo.Client, mode Mode, opts Options) (Feed, error) {
	if mode == ModeAuto || mode == "" {
		m, err := Detect(ctx, client)
		if err != nil {
			return nil, err
		}
		mode = m
	}
	switch mode {
	case ModeOplog:
		return NewOplog(client, opts), nil
	case ModeChangeStream:
		return NewChangeStream(client, opts), nil
	}
	return nil, errs.Invalid("watchMode", "unknown change feed mode %q", mode)
}

// Detect returns the mode the server supports: change streams when it
// opens one (a replica set or sharded cluster), else the oplog when
// local.oplog.rs exists (FerretDB, whose embedded server keeps one). A
// server with neither is errs.Unimplemented.
func Detect(ctx context.Context, client *mongo.Client) (Mode, error) {
	cs, err := client.Watch(ctx, mongo.Pipeline{})
	if err == nil {
		_ = cs.Close(context.WithoutCancel(ctx))
		return ModeChangeStream, nil
	}
	if code := mongox.Classify(err); code != errs.Unimplemented && code != errs.InvalidArgument &&
		code != errs.Unknown && code != errs.FailedPrecondition && code != errs.PermissionDenied {
		return "", mongox.Errf(err, "detect change streams")
	}
	names, lerr := client.Database(oplogDB).ListCollectionNames(ctx, bson.D{{Key: "name", Value: oplogColl}})
	if lerr != nil {
		return "", mongox.Errf(lerr, "look for %s.%s", oplogDB, oplogColl)
	}
	if len(names) == 0 {
		return "", errs.Wrap(errs.Unimplemented, err, "the server has neither change streams nor %s.%s", oplogDB, oplogColl)
	}
	return ModeOplog, nil
}
