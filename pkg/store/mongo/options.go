package mongo

import (
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/store/mongo/changes"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongox"
)

// WatchMode selects how Watch learns of changes.
type WatchMode string

// Watch modes.
const (
	// WatchAuto uses change streams when the server has them and tails the
	// oplog otherwise.
	WatchAuto WatchMode = "auto"
	// WatchChangeStream opens a change stream per watch (replica sets and
	// sharded clusters).
	WatchChangeStream WatchMode = "changestream"
	// WatchOplog tails local.oplog.rs with one cursor per store, shared by
	// every watch (FerretDB on Capstan's embedded server, or a replica set
	// member when change streams are unwanted).
	WatchOplog WatchMode = "oplog"
)

// ParseWatchMode parses "auto", "changestream" or "oplog" (case
// insensitive); anything else is errs.InvalidArgument.
func ParseWatchMode(s string) (WatchMode, error) {
	switch m := WatchMode(strings.ToLower(s)); m {
	case WatchAuto, WatchChangeStream, WatchOplog:
		return m, nil
	case "":
		return WatchAuto, nil
	}
	return "", errs.Invalid("watchMode", "unknown watch mode %q (want auto, changestream or oplog)", s)
}

// Defaults of Options.
const (
	// DefaultDatabase is the database Options.Database defaults to.
	DefaultDatabase = "capstan"
	// DefaultTimeout bounds an operation whose context has no deadline.
	DefaultTimeout = 30 * time.Second
	// DefaultBookmarkInterval is how often a watch that asked for
	// bookmarks gets one.
	DefaultBookmarkInterval = 5 * time.Second
)

// Options configure a Store. The zero value of every field selects its
// default.
type Options struct {
	// Database holds one collection per kind. Default DefaultDatabase.
	Database string
	// WriteConcern of every write. Default majority.
	WriteConcern *writeconcern.WriteConcern
	// Timeout bounds each operation whose context has no deadline of its
	// own. Default DefaultTimeout; negative means no bound.
	Timeout time.Duration
	// WatchMode selects change streams or the oplog. Default WatchAuto.
	WatchMode WatchMode
	// BookmarkInterval is how often a watch that asked for bookmarks gets
	// one. Default DefaultBookmarkInterval.
	BookmarkInterval time.Duration
	// Changes tunes the change feed under Watch (getMore wait, batch
	// size, per-watch buffer, retry backoff).
	Changes changes.Options
	// Connect tunes the connection that Open makes.
	Connect mongox.ConnectOptions
}

// withDefaults validates o and fills in its defaults.
func (o Options) withDefaults() (Options, error) {
	if o.Database == "" {
		o.Database = DefaultDatabase
	}
	if strings.ContainsAny(o.Database, "/\\. \"$*<>:|?\x00") || len(o.Database) > 63 {
		return o, errs.Invalid("Database", "invalid database name %q", o.Database)
	}
	if o.WriteConcern == nil {
		o.WriteConcern = writeconcern.Majority()
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	mode, err := ParseWatchMode(string(o.WatchMode))
	if err != nil {
		return o, err
	}
	o.WatchMode = mode
	if o.BookmarkInterval <= 0 {
		o.BookmarkInterval = DefaultBookmarkInterval
	}
	return o, nil
}
