package embedded

import (
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
)

// Defaults of Options.
const (
	// DefaultAddr is the public listen address when Options.Addr is empty.
	DefaultAddr = "127.0.0.1:27017"
	// DefaultOplogSize is the capped size of local.oplog.rs in bytes.
	DefaultOplogSize int64 = 32 << 20
	// DefaultOplogMaxEntries is the capped document count of local.oplog.rs.
	DefaultOplogMaxEntries int64 = 1000
	// DefaultMaxConns is the default limit of concurrent client connections.
	DefaultMaxConns = 1024
	// DefaultBackendTimeout bounds one write round trip under the write lock.
	DefaultBackendTimeout = 60 * time.Second
	// DefaultCleanupInterval is how often capped collections are trimmed.
	DefaultCleanupInterval = time.Second
)

// Options configure a Server. The zero value of every field but DataDir
// selects its default.
type Options struct {
	// DataDir holds the databases (one SQLite file each), the backend's
	// socket and a lock file that keeps a second server off the same
	// directory. Required; created if missing; persistent across restarts.
	DataDir string
	// Addr is the public TCP listen address; "127.0.0.1:0" picks a free
	// port, ":27017" listens on every interface. Default DefaultAddr.
	Addr string
	// OplogSize is the capped size of local.oplog.rs in bytes, used when
	// the oplog is created. Default DefaultOplogSize.
	OplogSize int64
	// OplogMaxEntries is the capped document count of local.oplog.rs, used
	// when the oplog is created. Default DefaultOplogMaxEntries. It bounds
	// how far a tailer may fall behind before its position is trimmed
	// away, and what other reads of the oplog cost: FerretDB reads all its
	// entries for them, about 10-50 µs each without the race detector. A
	// tailer's own reads do not grow with it: the front serves them in
	// proportion to the new entries (oplogtail.go).
	OplogMaxEntries int64
	// MaxConns limits concurrent client connections; connections beyond it
	// are closed as soon as they are accepted. Default DefaultMaxConns.
	MaxConns int
	// BackendTimeout bounds one write round trip to the backend while it
	// holds the write lock; when it passes, that client connection is
	// closed and the lock released. Default DefaultBackendTimeout.
	BackendTimeout time.Duration
	// CleanupInterval is how often capped collections (the oplog among
	// them) are trimmed back to their size and document count; embedded
	// FerretDB does not do it by itself, so between two trims a capped
	// collection may exceed its caps. Default DefaultCleanupInterval;
	// negative disables.
	CleanupInterval time.Duration
	// Logger receives the server's logs; the backend's own logs are passed
	// on at warning level and above. Nil discards everything.
	Logger *slog.Logger
}

// withDefaults validates o and fills in its defaults.
func (o Options) withDefaults() (Options, error) {
	if o.DataDir == "" {
		return o, errs.Invalid("DataDir", "a data directory is required")
	}
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	_, port, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return o, errs.Invalid("Addr", "%q is not host:port: %v", o.Addr, err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || (port != "0" && p == 0) {
		return o, errs.Invalid("Addr", "%q: port must be a number 0..65535", o.Addr)
	}
	switch {
	case o.OplogSize < 0:
		return o, errs.Invalid("OplogSize", "must not be negative, got %d", o.OplogSize)
	case o.OplogSize == 0:
		o.OplogSize = DefaultOplogSize
	case o.OplogSize < 4096:
		return o, errs.Invalid("OplogSize", "must be at least 4096 bytes, got %d", o.OplogSize)
	}
	switch {
	case o.OplogMaxEntries < 0:
		return o, errs.Invalid("OplogMaxEntries", "must not be negative, got %d", o.OplogMaxEntries)
	case o.OplogMaxEntries == 0:
		o.OplogMaxEntries = DefaultOplogMaxEntries
	}
	switch {
	case o.MaxConns < 0:
		return o, errs.Invalid("MaxConns", "must not be negative, got %d", o.MaxConns)
	case o.MaxConns == 0:
		o.MaxConns = DefaultMaxConns
	}
	switch {
	case o.BackendTimeout < 0:
		return o, errs.Invalid("BackendTimeout", "must not be negative, got %v", o.BackendTimeout)
	case o.BackendTimeout == 0:
		o.BackendTimeout = DefaultBackendTimeout
	}
	if o.CleanupInterval == 0 {
		o.CleanupInterval = DefaultCleanupInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}
