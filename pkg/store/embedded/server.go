package embedded

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"

	"github.com/capstanhq/capstan/pkg/errs"
)

// Names of the oplog.
const (
	OplogDatabase   = "local"
	OplogCollection = "oplog.rs"
)

// Error codes of command replies the server relies on.
const codeNamespaceExists = 48

// ferretdbNewMu serializes ferretdb.New, which writes process-global state.
var ferretdbNewMu sync.Mutex

// Server is an embedded MongoDB-wire server: FerretDB on SQLite behind a
// write-serializing front. Its methods are safe for concurrent use.
type Server struct {
	opts      Options
	log       *slog.Logger
	writeLock chan struct{}

	mu   sync.Mutex
	addr string // bound public address; set by the first Start
	run  *run   // the running (or stopping) instance; nil when stopped
}

// run is the state of one Start..Stop cycle.
type run struct {
	dataDir  string
	lockFile *os.File
	sockPath string
	sockDir  string // a private temp dir holding sockPath, or ""

	stopFerret context.CancelFunc
	ferretDone chan struct{}

	front *front
	ids   *idIndexes // _id lookup indexes; see idindex.go

	stopCleanup context.CancelFunc
	cleanupDone chan struct{}

	stopOnce sync.Once
}

// New validates opts and returns a stopped server. Invalid options are
// errs.InvalidArgument naming the field.
func New(opts Options) (*Server, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Server{
		opts:      o,
		log:       o.Logger,
		writeLock: make(chan struct{}, 1),
	}, nil
}

// Addr returns the public host:port the server is bound to, or, before the
// first Start, the configured address.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.addr != "" {
		return s.addr
	}
	return s.opts.Addr
}

// URI returns a MongoDB connection string for the server that a driver
// uses as a direct connection to this single node. An unspecified listen
// IP (0.0.0.0, ::) is replaced by 127.0.0.1: a wildcard listener reports
// itself as [::] even when asked for 0.0.0.0, accepts IPv4 either way, and
// ::1 is missing where IPv6 is disabled (as in containers by default).
func (s *Server) URI() string {
	host, port, err := net.SplitHostPort(s.Addr())
	if err != nil {
		return "mongodb://" + s.Addr() + "/?directConnection=true"
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	u := url.URL{Scheme: "mongodb", Host: net.JoinHostPort(host, port), Path: "/", RawQuery: "directConnection=true"}
	return u.String()
}

// Start starts FerretDB and the front. It returns once the server answers
// a ping through the public address and local.oplog.rs exists as a capped
// collection; when the newest oplog entry is from the current second it
// first waits for the next one, so that entries written after the start
// sort after it. Start after Stop restarts on the same data directory and the
// same address (the same port, also when Addr asked for port 0). Starting
// a running server is errs.FailedPrecondition, so is a data directory in
// use by another server; a taken address is errs.Unavailable.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.run != nil {
		return errs.New(errs.FailedPrecondition, "embedded server is already started (or still stopping)")
	}
	r, err := s.start(ctx)
	if err != nil {
		return err
	}
	s.run = r
	return nil
}

// start does the work of Start; on error it undoes what it did.
func (s *Server) start(ctx context.Context) (_ *run, err error) {
	r := &run{}
	defer func() {
		if err != nil {
			s.teardown(context.WithoutCancel(ctx), r)
		}
	}()

	if r.dataDir, err = filepath.Abs(s.opts.DataDir); err != nil {
		return r, errs.Wrap(errs.InvalidArgument, err, "DataDir %q", s.opts.DataDir)
	}
	if err = os.MkdirAll(r.dataDir, 0o700); err != nil {
		return r, errs.Wrap(errs.FailedPrecondition, err, "create data directory")
	}
	if r.lockFile, err = lockDir(r.dataDir); err != nil {
		return r, errs.Wrap(errs.FailedPrecondition, err, "data directory %s is in use by another server", r.dataDir)
	}

	// The public listener first: a taken port should fail fast.
	addr := s.addr
	if addr == "" {
		addr = s.opts.Addr
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return r, errs.Wrap(errs.Unavailable, err, "listen on %s", addr)
	}
	defer func() {
		if err != nil {
			_ = ln.Close()
		}
	}()

	if err = s.startFerret(r); err != nil {
		return r, err
	}
	if err = s.waitBackend(ctx, r); err != nil {
		return r, err
	}
	if err = s.ensureOplog(ctx, r); err != nil {
		return r, err
	}
	if err = s.waitPastNewestEntry(ctx, r); err != nil {
		return r, err
	}
	r.ids = newIDIndexes(r.dataDir, s.log)
	if err := r.ids.ensureAll(ctx); err != nil {
		s.log.Warn("could not add the _id lookup indexes", "err", err)
	}

	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", r.sockPath)
	}
	r.front = newFront(ln, dial, s.writeLock, s.opts.MaxConns, s.opts.BackendTimeout, s.log)
	r.front.ids = r.ids
	r.front.serve()
	s.addr = ln.Addr().String()

	if err = pingAddr(ctx, "tcp", s.addr); err != nil {
		return r, errs.Wrap(errs.Unavailable, err, "ping through %s", s.addr)
	}

	if s.opts.CleanupInterval > 0 {
		cctx, cancel := context.WithCancel(context.Background())
		r.stopCleanup = cancel
		r.cleanupDone = make(chan struct{})
		go func() {
			defer close(r.cleanupDone)
			s.cleanupLoop(cctx, r)
		}()
	}
	s.log.Info("embedded server started", "addr", s.addr, "dataDir", r.dataDir)
	return r, nil
}

// startFerret starts FerretDB on a private unix socket.
func (s *Server) startFerret(r *run) error {
	r.sockPath = filepath.Join(r.dataDir, "backend.sock")
	if len(r.sockPath) > 100 { // sun_path is 104 bytes on some systems
		dir, err := os.MkdirTemp("", "capstan-embedded-")
		if err != nil {
			return errs.Wrap(errs.Internal, err, "create socket directory")
		}
		r.sockDir = dir
		r.sockPath = filepath.Join(dir, "backend.sock")
	}
	// We hold the data directory lock, so an existing socket is stale.
	if err := os.Remove(r.sockPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return errs.Wrap(errs.FailedPrecondition, err, "remove stale socket")
	}

	sqliteURL := (&url.URL{Scheme: "file", Path: r.dataDir + "/"}).String()
	ferretLog := slog.New(minLevel{h: s.log.Handler(), min: slog.LevelWarn}).With("component", "ferretdb")

	ferretdbNewMu.Lock()
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{Unix: r.sockPath},
		Logger:    ferretLog,
		Handler:   "sqlite",
		SQLiteURL: sqliteURL,
	})
	ferretdbNewMu.Unlock()
	if err != nil {
		return errs.Wrap(errs.Internal, err, "start FerretDB")
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.stopFerret = cancel
	r.ferretDone = make(chan struct{})
	go func() {
		defer close(r.ferretDone)
		_ = f.Run(ctx)
	}()
	return nil
}

// waitBackend waits until FerretDB answers a ping.
func (s *Server) waitBackend(ctx context.Context, r *run) error {
	delay := 2 * time.Millisecond
	for {
		err := pingAddr(ctx, "unix", r.sockPath)
		if err == nil {
			return nil
		}
		select {
		case <-r.ferretDone:
			return errs.Wrap(errs.Internal, err, "FerretDB stopped while starting")
		case <-ctx.Done():
			return errs.Wrap(errs.CodeOf(ctx.Err()), err, "waiting for FerretDB")
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// pingAddr sends a ping on a new connection to addr.
func pingAddr(ctx context.Context, network, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	_, err = runCommand(ctx, c, bufio.NewReader(c), "admin", bsoncore.NewDocumentBuilder().AppendInt32("ping", 1).Build())
	return err
}

// backendConn is a connection to FerretDB for the server's own commands.
type backendConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialBackend(ctx context.Context, r *run) (*backendConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", r.sockPath)
	if err != nil {
		return nil, err
	}
	return &backendConn{c: c, r: bufio.NewReader(c)}, nil
}

func (b *backendConn) close() { _ = b.c.Close() }

// run sends a read command.
func (b *backendConn) run(ctx context.Context, db string, cmd bsoncore.Document) (bsoncore.Document, error) {
	return runCommand(ctx, b.c, b.r, db, cmd)
}

// write sends a command under the write lock, bounded by the backend
// timeout like a client's write.
func (s *Server) write(ctx context.Context, b *backendConn, db string, cmd bsoncore.Document) (bsoncore.Document, error) {
	select {
	case s.writeLock <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.writeLock }()
	ctx, cancel := context.WithTimeout(ctx, s.opts.BackendTimeout)
	defer cancel()
	return b.run(ctx, db, cmd)
}

// listCollections returns the collection infos of db's collections,
// optionally filtered.
func (b *backendConn) listCollections(ctx context.Context, db string, filter bsoncore.Document) ([]bsoncore.Document, error) {
	cmd := bsoncore.NewDocumentBuilder().AppendInt32("listCollections", 1)
	if filter != nil {
		cmd.AppendDocument("filter", filter)
	}
	reply, err := b.run(ctx, db, cmd.Build())
	if err != nil {
		return nil, err
	}
	return firstBatch(reply)
}

// firstBatch returns cursor.firstBatch of a reply whose cursor is complete.
func firstBatch(reply bsoncore.Document) ([]bsoncore.Document, error) {
	batch, err := reply.LookupErr("cursor", "firstBatch")
	if err != nil {
		return nil, fmt.Errorf("reply has no cursor.firstBatch: %w", err)
	}
	if id, err := reply.LookupErr("cursor", "id"); err == nil && id.IsNumber() && id.AsInt64() != 0 {
		return nil, errors.New("reply cursor has more batches")
	}
	arr, ok := batch.ArrayOK()
	if !ok {
		return nil, errors.New("cursor.firstBatch is not an array")
	}
	vals, err := arr.Values()
	if err != nil {
		return nil, err
	}
	docs := make([]bsoncore.Document, 0, len(vals))
	for _, v := range vals {
		if d, ok := v.DocumentOK(); ok {
			docs = append(docs, d)
		}
	}
	return docs, nil
}

// ensureOplog creates local.oplog.rs as a capped collection if it does not
// exist, and checks that an existing one is capped.
func (s *Server) ensureOplog(ctx context.Context, r *run) error {
	b, err := dialBackend(ctx, r)
	if err != nil {
		return errs.Wrap(errs.Unavailable, err, "connect to FerretDB")
	}
	defer b.close()

	filter := bsoncore.NewDocumentBuilder().AppendString("name", OplogCollection).Build()
	infos, err := b.listCollections(ctx, OplogDatabase, filter)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "list %s collections", OplogDatabase)
	}
	if len(infos) > 0 {
		if !isCapped(infos[0]) {
			return errs.New(errs.FailedPrecondition, "%s.%s exists but is not a capped collection", OplogDatabase, OplogCollection)
		}
		return nil
	}
	create := bsoncore.NewDocumentBuilder().
		AppendString("create", OplogCollection).
		AppendBoolean("capped", true).
		AppendInt64("size", s.opts.OplogSize).
		AppendInt64("max", s.opts.OplogMaxEntries).
		Build()
	if _, err := s.write(ctx, b, OplogDatabase, create); err != nil {
		var ce *commandError
		if errors.As(err, &ce) && ce.Code == codeNamespaceExists {
			return nil
		}
		return errs.Wrap(errs.Internal, err, "create %s.%s", OplogDatabase, OplogCollection)
	}
	s.log.Info("created the oplog", "size", s.opts.OplogSize, "maxEntries", s.opts.OplogMaxEntries)
	return nil
}

// waitPastNewestEntry returns once the wall clock is past the second of the
// newest oplog entry. FerretDB stamps oplog entries (ts) and the record ids
// that order capped collections with the time in seconds and a counter
// that starts over in every process; a process that restarts within the
// second of its predecessor's last write would otherwise stamp entries that
// sort before that write's, and tailers would never see them.
func (s *Server) waitPastNewestEntry(ctx context.Context, r *run) error {
	b, err := dialBackend(ctx, r)
	if err != nil {
		return errs.Wrap(errs.Unavailable, err, "connect to FerretDB")
	}
	defer b.close()
	find := bsoncore.NewDocumentBuilder().
		AppendString("find", OplogCollection).
		AppendDocument("sort", bsoncore.NewDocumentBuilder().AppendInt32("$natural", -1).Build()).
		AppendDocument("projection", bsoncore.NewDocumentBuilder().AppendInt32("ts", 1).Build()).
		AppendInt32("limit", 1).
		AppendBoolean("singleBatch", true).
		Build()
	reply, err := b.run(ctx, OplogDatabase, find)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "read the newest oplog entry")
	}
	docs, err := firstBatch(reply)
	if err != nil || len(docs) == 0 {
		return nil
	}
	sec, _, ok := docs[0].Lookup("ts").TimestampOK()
	if !ok {
		return nil
	}
	newest := time.Unix(int64(sec), 0)
	wait := time.Until(newest.Add(time.Second))
	switch {
	case wait <= 0:
		return nil
	case wait > 5*time.Second:
		s.log.Warn("the newest oplog entry is from the future; did the clock go back?", "ts", newest)
		return nil
	}
	select {
	case <-time.After(wait):
		return nil
	case <-ctx.Done():
		return errs.Wrap(errs.CodeOf(ctx.Err()), ctx.Err(), "waiting for the clock to pass the newest oplog entry")
	}
}

// isCapped reports whether a listCollections info says capped: true.
func isCapped(info bsoncore.Document) bool {
	v, err := info.LookupErr("options", "capped")
	if err != nil {
		return false
	}
	c, ok := v.BooleanOK()
	return ok && c
}

// cleanupLoop trims capped collections every CleanupInterval until ctx
// ends.
func (s *Server) cleanupLoop(ctx context.Context, r *run) {
	t := time.NewTicker(s.opts.CleanupInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.trimCapped(ctx, r); err != nil && ctx.Err() == nil {
			s.log.Warn("trimming capped collections failed", "err", err)
		}
	}
}

// trimCapped runs compact, which deletes the oldest documents of a capped
// collection over its size, on every capped collection.
func (s *Server) trimCapped(ctx context.Context, r *run) error {
	b, err := dialBackend(ctx, r)
	if err != nil {
		return err
	}
	defer b.close()
	reply, err := b.run(ctx, "admin", bsoncore.NewDocumentBuilder().
		AppendInt32("listDatabases", 1).AppendBoolean("nameOnly", true).Build())
	if err != nil {
		return err
	}
	dbsVal, err := reply.LookupErr("databases")
	if err != nil {
		return err
	}
	dbsArr, _ := dbsVal.ArrayOK()
	dbs, err := dbsArr.Values()
	if err != nil {
		return err
	}
	for _, v := range dbs {
		d, ok := v.DocumentOK()
		if !ok {
			continue
		}
		name, _ := d.Lookup("name").StringValueOK()
		if name == "" {
			continue
		}
		infos, err := b.listCollections(ctx, name, nil)
		if err != nil {
			return err
		}
		for _, info := range infos {
			if !isCapped(info) {
				continue
			}
			coll, _ := info.Lookup("name").StringValueOK()
			cmd := bsoncore.NewDocumentBuilder().AppendString("compact", coll).Build()
			if _, err := s.write(ctx, b, name, cmd); err != nil {
				return fmt.Errorf("compact %s.%s: %w", name, coll, err)
			}
		}
	}
	return nil
}

// Stop closes the public listener, drops every client connection, stops
// FerretDB and waits for all of the server's goroutines. Stopping a stopped
// server does nothing. When ctx ends first Stop returns its error and the
// server keeps stopping; call Stop again to wait for the rest.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.run
	if r == nil {
		return nil
	}
	if err := s.teardown(ctx, r); err != nil {
		return err
	}
	s.run = nil
	s.log.Info("embedded server stopped", "addr", s.addr)
	return nil
}

// teardown stops what r started, in reverse order. It is idempotent and
// returns ctx's error if FerretDB has not ended before ctx did.
func (s *Server) teardown(ctx context.Context, r *run) error {
	r.stopOnce.Do(func() {
		if r.stopCleanup != nil {
			r.stopCleanup()
			<-r.cleanupDone
		}
		if r.front != nil {
			r.front.close()
		}
		if r.ids != nil {
			r.ids.close()
		}
		if r.stopFerret != nil {
			r.stopFerret()
		}
	})
	if r.ferretDone != nil {
		select {
		case <-r.ferretDone:
		case <-ctx.Done():
			return errs.Wrap(errs.CodeOf(ctx.Err()), ctx.Err(), "waiting for FerretDB to stop")
		}
	}
	if r.sockDir != "" {
		_ = os.RemoveAll(r.sockDir)
		r.sockDir = ""
	} else if r.sockPath != "" {
		_ = os.Remove(r.sockPath)
	}
	if r.lockFile != nil {
		unlockDir(r.lockFile)
		r.lockFile = nil
	}
	return nil
}

// minLevel is a slog.Handler that drops records below a level.
type minLevel struct {
	h   slog.Handler
	min slog.Level
}

// Enabled implements slog.Handler.
func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.h.Enabled(ctx, l)
}

// Handle implements slog.Handler.
func (m minLevel) Handle(ctx context.Context, r slog.Record) error { return m.h.Handle(ctx, r) }

// WithAttrs implements slog.Handler.
func (m minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevel{h: m.h.WithAttrs(attrs), min: m.min}
}

// WithGroup implements slog.Handler.
func (m minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h: m.h.WithGroup(name), min: m.min}
}
