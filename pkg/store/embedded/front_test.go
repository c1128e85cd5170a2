package embedded

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"
)

// testWait bounds every wait on a condition in these tests; conditions are
// expected to hold long before it.
const testWait = 30 * time.Second

// fakeBackend is a wire-protocol server that answers every request with
// {ok: 1, command: <name>} like FerretDB (one reply per request, moreToCome
// or not) and records what it sees. Commands named "hang*" get no reply
// until release is called or their connection closes; "big" gets a reply
// of bigReply bytes; "die" closes the connection.
type fakeBackend struct {
	t  *testing.T
	ln net.Listener

	bigReply int

	mu      sync.Mutex
	events  []string
	times   map[string]time.Time // first time of each event
	release chan struct{}
	conns   map[net.Conn]bool
	changed chan struct{} // closed and replaced on every event
	wg      sync.WaitGroup
}

func newFakeBackend(t *testing.T) *fakeBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBackend{t: t, ln: ln, release: make(chan struct{}), conns: map[net.Conn]bool{}, times: map[string]time.Time{}, changed: make(chan struct{}), bigReply: 32 << 20}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(b.close)
	return b
}

func (b *fakeBackend) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", b.ln.Addr().String())
}

func (b *fakeBackend) close() {
	_ = b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		_ = c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// closeConns closes every backend connection, as a crashing backend would.
func (b *fakeBackend) closeConns() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.conns {
		_ = c.Close()
	}
}

func (b *fakeBackend) event(e string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.events = append(b.events, e)
	if _, ok := b.times[e]; !ok {
		b.times[e] = time.Now()
	}
	close(b.changed)
	b.changed = make(chan struct{})
}

// releaseHung lets every hung command reply.
func (b *fakeBackend) releaseHung() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.release)
	b.release = make(chan struct{})
}

func (b *fakeBackend) snapshot() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.events...)
}

// waitEvent waits until an event equal to e has been recorded.
func (b *fakeBackend) waitEvent(e string) {
	b.t.Helper()
	deadline := time.After(testWait)
	for {
		b.mu.Lock()
		for _, got := range b.events {
			if got == e {
				b.mu.Unlock()
				return
			}
		}
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			b.t.Fatalf("timed out waiting for backend event %q; events: %v", e, b.snapshot())
		}
	}
}

// indexOf returns the position of event e, or -1.
func indexOf(events []string, e string) int {
	for i, got := range events {
		if got == e {
			return i
		}
	}
	return -1
}

func (b *fakeBackend) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.conns[c] = true
		b.mu.Unlock()
		b.event("connect")
		b.wg.Add(1)
		go b.serve(c)
	}
}

func (b *fakeBackend) serve(c net.Conn) {
	defer b.wg.Done()
	defer func() {
		_ = c.Close()
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
		b.event("disconnect")
	}()
	r := bufio.NewReader(c)
	for {
		msg, err := readMessage(r, 2*MaxMessageSize)
		if err != nil {
			return
		}
		req := classify(msg)
		b.event("recv " + req.command)
		switch {
		case strings.HasPrefix(req.command, "hang"):
			b.mu.Lock()
			rel := b.release
			b.mu.Unlock()
			// Notice a closed connection while hanging, as FerretDB does.
			// (A connection that hung is not used again: this reader
			// would swallow the first byte of its next message.)
			gone := make(chan struct{})
			go func() {
				var one [1]byte
				_, _ = c.Read(one[:])
				close(gone)
			}()
			select {
			case <-rel:
			case <-gone:
				b.event("reply " + req.command)
				return
			}
			b.event("reply " + req.command)
		case req.command == "die":
			return
		}
		body := bsoncore.NewDocumentBuilder().AppendDouble("ok", 1).AppendString("command", req.command)
		if req.command == "big" {
			body.AppendBinary("data", 0, make([]byte, b.bigReply))
		}
		reply := replyTo(parseHeader(msg).requestID, body.Build())
		if _, err := c.Write(reply); err != nil {
			return
		}
	}
}

func replyTo(reqID int32, body bsoncore.Document) []byte {
	idx, msg := wiremessage.AppendHeaderStart(nil, 0, reqID, wiremessage.OpMsg)
	msg = wiremessage.AppendMsgFlags(msg, 0)
	msg = wiremessage.AppendMsgSectionType(msg, wiremessage.SingleDocument)
	msg = append(msg, body...)
	binary.LittleEndian.PutUint32(msg[idx:], uint32(len(msg)))
	return msg
}

// startFront serves a front for backend on a free port. Writes that start
// waiting for the write lock are reported on the returned channel.
func startFront(t *testing.T, b *fakeBackend, maxConns int, timeout time.Duration) (*front, <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := newFront(ln, b.dial, make(chan struct{}, 1), maxConns, timeout, testLogger(t))
	waits := make(chan string, 100)
	f.onLockWait = func(r request) { waits <- r.command }
	f.serve()
	t.Cleanup(f.close)
	return f, waits
}

// waitFor receives from ch until it yields want.
func waitFor(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	deadline := time.After(testWait)
	for {
		select {
		case got := <-ch:
			if got == want {
				return
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %q", want)
		}
	}
}

// testLogger logs to the test at debug level when CAPSTAN_TEST_LOG is set.
func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("CAPSTAN_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// rawClient is a client connection speaking raw wire messages.
type rawClient struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawClient{t: t, c: c, r: bufio.NewReader(c)}
}

func (rc *rawClient) send(msg []byte) {
	rc.t.Helper()
	_ = rc.c.SetWriteDeadline(time.Now().Add(testWait))
	if _, err := rc.c.Write(msg); err != nil {
		rc.t.Fatalf("send: %v", err)
	}
}

// recv reads one reply and returns its header and body.
func (rc *rawClient) recv() (header, bsoncore.Document, error) {
	_ = rc.c.SetReadDeadline(time.Now().Add(testWait))
	msg, err := readMessage(rc.r, 2*MaxMessageSize)
	if err != nil {
		return header{}, nil, err
	}
	_, rem, _ := wiremessage.ReadMsgFlags(msg[headerLen:])
	body, _ := msgBody(rem)
	return parseHeader(msg), body, nil
}

// call sends cmd and returns the command name echoed by the fake backend.
func (rc *rawClient) call(reqID int32, name string) string {
	rc.t.Helper()
	rc.send(opMsg(reqID, 0, cmd(name)))
	h, body, err := rc.recv()
	if err != nil {
		rc.t.Fatalf("%s: %v", name, err)
	}
	if h.responseTo != reqID {
		rc.t.Fatalf("%s: reply to %d, want %d", name, h.responseTo, reqID)
	}
	got, _ := body.Lookup("command").StringValueOK()
	return got
}

// expectClosed asserts the server closes the connection: a read ends with
// EOF or a reset, not a timeout.
func (rc *rawClient) expectClosed() {
	rc.t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(testWait))
	_, err := io.Copy(io.Discard, rc.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		rc.t.Fatalf("connection still open after %v", testWait)
	}
}

func TestFrontRelaysInOrder(t *testing.T) {
	b := newFakeBackend(t)
	f, _ := startFront(t, b, 10, time.Minute)
	c := dialRaw(t, f.ln.Addr().String())
	for i, name := range []string{"hello", "insert", "find", "update", "getMore"} {
		if got := c.call(int32(i+1), name); got != name {
			t.Fatalf("reply for %s is for %s", name, got)
		}
	}
}

// A write that the backend does not answer within the timeout loses its
// connections and releases the lock; the next write then runs.
func TestFrontWriteTimeoutReleasesLock(t *testing.T) {
	b := newFakeBackend(t)
	const timeout = 2 * time.Second
	f, waits := startFront(t, b, 10, timeout)
	a := dialRaw(t, f.ln.Addr().String())
	a.send(opMsg(1, 0, cmd("hangInsert")))
	b.waitEvent("recv hangInsert")

	c := dialRaw(t, f.ln.Addr().String())
	c.send(opMsg(2, 0, cmd("update")))
	waitFor(t, waits, "update") // queued behind the hung write
	if _, body, err := c.recv(); err != nil || body.Lookup("command").StringValue() != "update" {
		t.Fatalf("update: %v %v", body, err)
	}
	a.expectClosed()
	b.mu.Lock()
	held := b.times["recv update"].Sub(b.times["recv hangInsert"])
	b.mu.Unlock()
	if held < timeout {
		t.Fatalf("the second write reached the backend %v after the first, before the %v timeout", held, timeout)
	}
}

// Reads pass a held write lock; writes wait for it.
func TestFrontReadsBypassWriteLock(t *testing.T) {
	b := newFakeBackend(t)
	f, waits := startFront(t, b, 10, time.Minute)
	a := dialRaw(t, f.ln.Addr().String())
	a.send(opMsg(1, 0, cmd("hangUpdate")))
	b.waitEvent("recv hangUpdate")

	r := dialRaw(t, f.ln.Addr().String())
	for i, name := range []string{"find", "getMore", "aggregate", "ping", "listCollections"} {
		if got := r.call(int32(10+i), name); got != name {
			t.Fatalf("got reply for %q", got)
		}
	}

	w := dialRaw(t, f.ln.Addr().String())
	w.send(opMsg(20, 0, cmd("insert")))
	waitFor(t, waits, "insert") // queued behind the hung write
	b.releaseHung()
	if _, _, err := a.recv(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.recv(); err != nil {
		t.Fatal(err)
	}
	ev := b.snapshot()
	if indexOf(ev, "recv insert") < indexOf(ev, "reply hangUpdate") {
		t.Fatalf("a write ran while another held the lock: %v", ev)
	}
	if indexOf(ev, "recv find") > indexOf(ev, "reply hangUpdate") {
		t.Fatalf("a read waited for the write lock: %v", ev)
	}
}

// A client that never reads its replies cannot keep the lock: the reply is
// buffered before the lock is released.
func TestFrontLockNotHeldWhileWritingToClient(t *testing.T) {
	b := newFakeBackend(t)
	f, _ := startFront(t, b, 10, time.Minute)
	slow := dialRaw(t, f.ln.Addr().String())
	slow.send(opMsg(1, 0, cmd("big"))) // a 32 MB reply that slow never reads
	b.waitEvent("recv big")

	c := dialRaw(t, f.ln.Addr().String())
	if got := c.call(2, "delete"); got != "delete" {
		t.Fatalf("got reply for %q", got)
	}
}

// A client that sends half a message and stalls holds nothing.
func TestFrontStalledClient(t *testing.T) {
	b := newFakeBackend(t)
	f, _ := startFront(t, b, 10, time.Minute)
	stalled := dialRaw(t, f.ln.Addr().String())
	msg := opMsg(1, 0, cmd("insert"))
	stalled.send(msg[:len(msg)/2])

	c := dialRaw(t, f.ln.Addr().String())
	for i := range 3 {
		if got := c.call(int32(2+i), "insert"); got != "insert" {
			t.Fatalf("got reply for %q", got)
		}
	}
	if indexOf(b.snapshot(), "recv ") >= 0 {
		t.Fatal("a partial message reached the backend")
	}
}

func TestFrontBadLengthDisconnects(t *testing.T) {
	for _, n := range []int32{0, 15, -1, MaxMessageSize + 1, 1 << 30} {
		b := newFakeBackend(t)
		f, _ := startFront(t, b, 10, time.Minute)
		bad := dialRaw(t, f.ln.Addr().String())
		var hdr [16]byte
		binary.LittleEndian.PutUint32(hdr[:], uint32(n))
		bad.send(hdr[:])
		bad.expectClosed()

		good := dialRaw(t, f.ln.Addr().String())
		if got := good.call(1, "insert"); got != "insert" {
			t.Fatalf("length %d: got reply for %q", n, got)
		}
	}
}

// The backend ignores moreToCome and replies anyway; the client must not
// see that reply.
func TestFrontMoreToComeDropsReply(t *testing.T) {
	b := newFakeBackend(t)
	f, _ := startFront(t, b, 10, time.Minute)
	c := dialRaw(t, f.ln.Addr().String())
	c.send(opMsg(1, wiremessage.MoreToCome, cmd("insert")))
	c.send(opMsg(2, wiremessage.MoreToCome, cmd("find")))
	if got := c.call(3, "ping"); got != "ping" {
		t.Fatalf("first reply the client sees is for %q, want ping", got)
	}
	ev := b.snapshot()
	if indexOf(ev, "recv insert") < 0 || indexOf(ev, "recv find") < 0 {
		t.Fatalf("fire-and-forget requests did not reach the backend: %v", ev)
	}
}

func TestFrontMaxConns(t *testing.T) {
	b := newFakeBackend(t)
	f, _ := startFront(t, b, 3, time.Minute)
	var conns []*rawClient
	for i := range 3 {
		c := dialRaw(t, f.ln.Addr().String())
		c.call(int32(i), "ping") // accepted and registered
		conns = append(conns, c)
	}
	extra := dialRaw(t, f.ln.Addr().String())
	extra.send(opMsg(9, 0, cmd("ping")))
	extra.expectClosed()

	_ = conns[0].c.Close()
	deadline := time.Now().Add(testWait)
	for f.conns() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("closed connection still counted: %d", f.conns())
		}
		time.Sleep(5 * time.Millisecond)
	}
	again := dialRaw(t, f.ln.Addr().String())
	if got := again.call(10, "ping"); got != "ping" {
		t.Fatalf("got reply for %q", got)
	}
}

func TestFrontClientCloseClosesBackend(t *testing.T) {
	b := newFakeBackend(t)
	f, _ := startFront(t, b, 10, time.Minute)
	c := dialRaw(t, f.ln.Addr().String())
	c.call(1, "ping")
	_ = c.c.Close()
	b.waitEvent("disconnect")
}

// A client that goes away during a read does not keep its backend
// connection busy until the read ends.
func TestFrontClientGoneAbortsRead(t *testing.T) {
	b := newFakeBackend(t)
	f, _ := startFront(t, b, 10, time.Minute)
	c := dialRaw(t, f.ln.Addr().String())
	c.send(opMsg(1, 0, cmd("hang"))) // unknown: a write, runs to its end
	b.waitEvent("recv hang")
	b.releaseHung()
	if _, _, err := c.recv(); err != nil {
		t.Fatal(err)
	}
	// getMore is a read; the fake hangs it like an awaitData getMore.
	f2 := dialRaw(t, f.ln.Addr().String())
	f2.send(opMsg(2, 0, cmd("getMore")))
	b.waitEvent("recv getMore")
	_ = f2.c.Close()
	b.waitEvent("disconnect")
}

func TestFrontBackendCloseClosesClient(t *testing.T) {
	b := newFakeBackend(t)
	f, _ := startFront(t, b, 10, time.Minute)
	idle := dialRaw(t, f.ln.Addr().String())
	idle.call(1, "ping")
	busy := dialRaw(t, f.ln.Addr().String())
	busy.send(opMsg(2, 0, cmd("die")))
	busy.expectClosed()

	b.closeConns() // idle's backend goes away while idle waits for nothing
	idle.expectClosed()
}

// close drops stalled clients, clients waiting for the lock and clients
// holding it, and waits for every goroutine of the front.
func TestFrontCloseWithBusyClients(t *testing.T) {
	b := newFakeBackend(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := newFront(ln, b.dial, make(chan struct{}, 1), 10, time.Minute, testLogger(t))
	f.serve()
	holder := dialRaw(t, ln.Addr().String())
	holder.send(opMsg(1, 0, cmd("hangInsert")))
	b.waitEvent("recv hangInsert")
	waiter := dialRaw(t, ln.Addr().String())
	waiter.send(opMsg(2, 0, cmd("insert")))
	stalled := dialRaw(t, ln.Addr().String())
	stalled.send([]byte{100, 0, 0, 0, 1})

	done := make(chan struct{})
	go func() {
		f.close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(testWait):
		t.Fatal("close did not return")
	}
	for _, c := range []*rawClient{holder, waiter, stalled} {
		c.expectClosed()
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("listener still accepts after close")
	}
}
