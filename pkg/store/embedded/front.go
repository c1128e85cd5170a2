package embedded

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// front is the public wire-protocol listener. It pairs every client
// connection with one backend connection and relays messages, running
// reads concurrently and writes one at a time under writeLock.
//
// Invariants:
//   - a message is read completely from the client before the write lock
//     is requested, and the lock is released before the response is
//     written to the client: no client I/O ever happens under the lock;
//   - the lock is held for at most timeout per write; a backend that does
//     not answer in time loses its connection pair, not the lock;
//   - the backend answers every request with exactly one response, also
//     requests flagged moreToCome (the backend ignores the flag), so the
//     front reads one response per request and drops the ones the client
//     does not expect.
type front struct {
	ln        net.Listener
	dial      func(ctx context.Context) (net.Conn, error)
	writeLock chan struct{} // capacity 1: holding a token is holding the lock
	maxConns  int
	timeout   time.Duration
	log       *slog.Logger

	// onLockWait, when set (by tests, before serve), is called when a
	// write starts waiting for the write lock.
	onLockWait func(request)

	tails *tails // awaitData cursors; see tail.go

	pinned atomic.Int64 // conditional writes split by _id (pinned.go), for tests
	served atomic.Int64 // oplog batches the front served (oplogtail.go), for tests
	// readsFromSQLite counts reads by _id answered from SQLite
	// (idIndexes.storedByID), for tests.
	readsFromSQLite atomic.Int64
	// pinMin is the estimated collection size from which conditional
	// writes are split by _id (pinned.go); tests lower it.
	pinMin atomic.Int64
	ids    *idIndexes // kept in step with writes; nil in tests of the front alone

	mu     sync.Mutex
	pairs  map[*pair]struct{}
	closed bool
	wg     sync.WaitGroup // the accept loop and every pair's goroutines
}

// newFront returns a front that serves ln once serve is called.
func newFront(ln net.Listener, dial func(context.Context) (net.Conn, error), writeLock chan struct{}, maxConns int, timeout time.Duration, log *slog.Logger) *front {
	f := &front{
		ln:        ln,
		dial:      dial,
		writeLock: writeLock,
		maxConns:  maxConns,
		timeout:   timeout,
		log:       log,
		pairs:     make(map[*pair]struct{}),
		tails:     newTails(),
	}
	f.pinMin.Store(defaultPinMin)
	return f
}

// serve starts the accept loop.
func (f *front) serve() {
	f.wg.Add(1)
	go f.acceptLoop()
}

// close stops accepting, drops every connection and waits for the
// goroutines of the front to end.
func (f *front) close() {
	f.mu.Lock()
	f.closed = true
	pairs := make([]*pair, 0, len(f.pairs))
	for p := range f.pairs {
		pairs = append(pairs, p)
	}
	f.mu.Unlock()
	_ = f.ln.Close()
	for _, p := range pairs {
		p.close()
	}
	f.wg.Wait()
}

// conns returns the number of open client connections.
func (f *front) conns() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pairs)
}

func (f *front) acceptLoop() {
	defer f.wg.Done()
	var backoff time.Duration
	for {
		c, err := f.ln.Accept()
		if err != nil {
			f.mu.Lock()
			closed := f.closed
			f.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary failure such as too many open files: back off
			// instead of spinning.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			f.log.Warn("accept failed", "err", err, "retryIn", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		p := &pair{f: f, client: c, done: make(chan struct{})}
		f.mu.Lock()
		switch {
		case f.closed:
			f.mu.Unlock()
			_ = c.Close()
			return
		case len(f.pairs) >= f.maxConns:
			f.mu.Unlock()
			f.log.Warn("connection refused: too many connections", "remote", c.RemoteAddr().String(), "maxConns", f.maxConns)
			_ = c.Close()
			continue
		}
		f.pairs[p] = struct{}{}
		f.wg.Add(1)
		f.mu.Unlock()
		go p.serve()
	}
}

// pair is one client connection and its backend connection.
type pair struct {
	f      *front
	client net.Conn

	mu      sync.Mutex
	backend net.Conn // set once dialed; nil before

	done      chan struct{} // closed by close
	closeOnce sync.Once
}

// close closes both connections; it is safe to call any number of times
// from any goroutine.
func (p *pair) close() {
	p.closeOnce.Do(func() {
		close(p.done)
		_ = p.client.Close()
		p.mu.Lock()
		if p.backend != nil {
			_ = p.backend.Close()
		}
		p.mu.Unlock()
	})
}

// closed reports whether close was called.
func (p *pair) closed() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// serve runs the pair: it dials the backend, starts a reader for each side
// and relays requests until either side goes away.
func (p *pair) serve() {
	defer func() {
		p.close()
		p.f.tails.orphan(p)
		p.f.mu.Lock()
		delete(p.f.pairs, p)
		p.f.mu.Unlock()
		p.f.wg.Done()
	}()

	// Dial the backend; Stop closing the pair cancels the dial.
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	backend, err := p.f.dial(ctx)
	cancel()
	if err != nil {
		if !p.closed() {
			p.f.log.Warn("backend dial failed; dropping client", "remote", p.client.RemoteAddr().String(), "err", err)
		}
		return
	}
	p.mu.Lock()
	p.backend = backend
	p.mu.Unlock()
	if p.closed() { // closed while dialing: close raced with the assignment
		_ = backend.Close()
		return
	}

	requests := make(chan []byte)
	clientGone := make(chan struct{})
	responses := make(chan []byte)
	var readers sync.WaitGroup
	readers.Add(2)
	go func() {
		defer readers.Done()
		p.readClient(requests, clientGone)
	}()
	go func() {
		defer readers.Done()
		p.readBackend(backend, responses)
	}()
	p.dispatch(backend, requests, clientGone, responses)
	p.close()
	readers.Wait()
}

// readClient reads whole messages from the client and hands them to the
// dispatcher. A clean end of stream closes requests and clientGone: the
// dispatcher still completes a write already received. Any other read
// error, such as a bad length or a stream cut inside a message, drops the
// pair at once.
func (p *pair) readClient(requests chan<- []byte, clientGone chan<- struct{}) {
	r := bufio.NewReaderSize(p.client, 64<<10)
	for {
		msg, err := readMessage(r, MaxMessageSize)
		if err != nil {
			switch {
			case errors.Is(err, io.EOF):
				close(clientGone)
				close(requests)
			case p.closed():
			case errors.Is(err, errMessageLength):
				p.f.log.Warn("client sent a bad message; disconnecting", "remote", p.client.RemoteAddr().String(), "err", err)
				p.close()
			default:
				p.f.log.Debug("client connection ended", "remote", p.client.RemoteAddr().String(), "err", err)
				p.close()
			}
			return
		}
		select {
		case requests <- msg:
		case <-p.done:
			return
		}
	}
}

// readBackend reads whole messages from the backend and hands them to the
// dispatcher. Any read error, the backend closing included, drops the
// pair.
func (p *pair) readBackend(backend net.Conn, responses chan<- []byte) {
	r := bufio.NewReaderSize(backend, 64<<10)
	for {
		msg, err := readMessage(r, 2*MaxMessageSize)
		if err != nil {
			if !p.closed() {
				p.f.log.Debug("backend connection ended; dropping client", "remote", p.client.RemoteAddr().String(), "err", err)
			}
			p.close()
			return
		}
		select {
		case responses <- msg:
		case <-p.done:
			return
		}
	}
}

// dispatch relays requests one at a time until the pair ends.
func (p *pair) dispatch(backend net.Conn, requests <-chan []byte, clientGone <-chan struct{}, responses <-chan []byte) {
	for {
		var msg []byte
		select {
		case m, ok := <-requests:
			if !ok {
				return
			}
			msg = m
		case <-p.done:
			return
		}
		req := classify(msg)
		var out [][]byte
		var err error
		if req.write {
			if p.f.onLockWait != nil {
				p.f.onLockWait(req)
			}
			select {
			case p.f.writeLock <- struct{}{}:
			case <-p.done:
				return
			}
			out, err = p.write(backend, msg, req, responses)
			<-p.f.writeLock
			p.f.tails.writeDone()
		} else {
			out, err = p.read(backend, msg, req, responses, clientGone)
		}
		if err != nil {
			switch {
			case p.closed():
			case errors.Is(err, errClientGone):
				p.f.log.Debug("client went away during a read", "remote", p.client.RemoteAddr().String(), "command", req.command)
			default:
				p.f.log.Warn("dropping connection", "remote", p.client.RemoteAddr().String(), "command", req.command, "err", err)
			}
			return
		}
		for _, m := range out {
			if _, err := p.client.Write(m); err != nil {
				return
			}
		}
	}
}

// write relays a write; the caller holds the write lock. Conditional
// writes of one document by _id are split (see pinned.go).
func (p *pair) write(backend net.Conn, msg []byte, req request, responses <-chan []byte) ([][]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.f.timeout) // for the rare SQLite reads below
	defer cancel()
	if w, ok := planPinned(msg, req); ok && p.worthPinning(ctx, w) {
		out, handled, err := p.pinnedRoundTrip(backend, msg, w, responses)
		if handled || err != nil {
			return out, err
		}
	}
	out, err := p.roundTrip(backend, msg, req, responses, nil, p.f.timeout)
	if err == nil {
		p.f.ids.afterWrite(ctx, req)
	}
	return out, err
}

// worthPinning reports whether w's collection is large enough for the
// split to pay: it costs one more round trip to the backend, while the
// backend's own scan costs about 13 µs per (small) document.
func (p *pair) worthPinning(ctx context.Context, w *pinnedWrite) bool {
	n, ok := p.f.ids.size(ctx, w.db, w.coll)
	return !ok || n >= p.f.pinMin.Load()
}

// read relays a read; the waits of awaitData cursors are served by the
// front (see tail.go).
func (p *pair) read(backend net.Conn, msg []byte, req request, responses <-chan []byte, clientGone <-chan struct{}) ([][]byte, error) {
	if req.body != nil {
		switch req.command {
		case "find":
			if isTailableAwait(req.body) {
				if from, ok := oplogTailQuery(req.body); ok && p.f.ids != nil {
					return p.oplogFind(backend, msg, req, from, responses)
				}
				return p.tailFind(backend, msg, req, responses, clientGone)
			}
		case "getMore":
			if id, ok := intField(req.body, "getMore"); ok && p.f.tails.tracked(id) {
				return p.tailGetMore(backend, msg, req, id, responses, clientGone)
			}
		case "killCursors":
			p.f.tails.forget(killedCursors(req.body)...)
		}
	}
	return p.roundTrip(backend, msg, req, responses, clientGone, 0)
}

var (
	// errBackendTimeout reports a write the backend did not answer in time.
	errBackendTimeout = errors.New("backend did not answer within the backend timeout")
	// errClientGone reports a read abandoned because its client went away.
	errClientGone = errors.New("client went away")
)

// roundTrip forwards one request and collects the responses the client
// expects (more than one only if the backend ever streams a reply with
// moreToCome, which it does not do today). A positive timeout bounds the whole round trip. A read (abort
// non-nil) is abandoned when the client goes away; a write runs to its end.
func (p *pair) roundTrip(backend net.Conn, msg []byte, req request, responses <-chan []byte, abort <-chan struct{}, timeout time.Duration) ([][]byte, error) {
	var timer <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		timer = t.C
		_ = backend.SetWriteDeadline(time.Now().Add(timeout))
	} else {
		_ = backend.SetWriteDeadline(time.Time{})
	}
	if _, err := backend.Write(msg); err != nil {
		return nil, err
	}
	reqID := parseHeader(msg).requestID
	var out [][]byte
	for {
		select {
		case resp := <-responses:
			if h := parseHeader(resp); h.responseTo != reqID {
				return nil, errors.New("backend response does not match the request")
			}
			if req.noReply {
				return nil, nil
			}
			out = append(out, resp)
			if !moreToCome(resp) {
				return out, nil
			}
		case <-timer:
			p.close()
			return nil, errBackendTimeout
		case <-abort:
			return nil, errClientGone
		case <-p.done:
			return nil, net.ErrClosed
		}
	}
}
