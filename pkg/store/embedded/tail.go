package embedded

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
)

// The front serves the waits of tailable awaitData cursors itself.
//
// FerretDB answers an awaitData getMore by re-running the cursor's query
// every 10 ms until something new turns up or maxTimeMS passes, and every
// run reads the whole collection (nothing but _id equality reaches SQLite),
// so an idle tailer of a 1000-entry oplog keeps a core busy. Worse, when
// maxTimeMS ends in the middle of such a run, the cursor's position moves
// back to wherever the run was, and the next getMore returns old entries
// again; once one run takes longer than maxTimeMS the cursor returns
// nothing at all.
//
// So the front creates such cursors as plain tailable cursors on the
// backend (it drops awaitData from the find), whose getMore reads the
// collection once, without a deadline, and returns at once. It forwards a
// client's getMore only when the cursor may have something new: the cursor
// has results the backend has not returned yet (the last batch was full),
// or a write completed since the backend last looked. Otherwise it waits
// for the next write, up to the client's maxTimeMS, and then answers with
// an empty batch itself, as the backend would have.
//
// A write is known complete when its reply came back; the backend writes
// the oplog entry before it replies. Seen counters are taken before a
// request is forwarded, so a write that completes while the backend reads
// wakes the next getMore rather than being missed.

// Defaults of the backend that the front reproduces.
const (
	defaultFindBatchSize    = 101
	defaultGetMoreBatchSize = 250
	defaultAwaitTime        = time.Second
	codeCursorNotFound      = 43
)

// tails tracks the awaitData cursors open through the front.
type tails struct {
	mu      sync.Mutex
	writes  uint64        // completed writes
	changed chan struct{} // closed and replaced when writes changes or a cursor is orphaned
	cursors map[int64]*tailCursor

	forwarded atomic.Int64 // getMores sent to the backend, for tests
}

// tailCursor is one tracked cursor; its fields are guarded by tails.mu.
type tailCursor struct {
	owner    *pair      // the connection that created it; the backend kills the cursor with it
	orphaned time.Time  // when owner closed; zero while it is open
	seen     uint64     // tails.writes when the backend last looked
	pending  bool       // the backend may hold results it has not returned
	oplog    *oplogTail // set when the front serves the cursor (oplogtail.go)
}

// orphanTTL is how long an orphaned cursor is remembered. The backend
// removes a cursor soon after its connection closes; until then a getMore
// must still reach it without maxTimeMS (see tailGetMore).
const orphanTTL = time.Minute

func newTails() *tails {
	return &tails{changed: make(chan struct{}), cursors: map[int64]*tailCursor{}}
}

// writeDone records a completed write and wakes the waiting getMores.
func (t *tails) writeDone() {
	t.mu.Lock()
	t.writes++
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
}

// snapshot returns the write count and the channel closed on the next
// write.
func (t *tails) snapshot() (uint64, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.writes, t.changed
}

func (t *tails) tracked(id int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cursors[id] != nil
}

func (t *tails) forget(ids ...int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, id := range ids {
		delete(t.cursors, id)
	}
}

// orphan marks the cursors created on p, which has closed, and forgets
// cursors orphaned longer than orphanTTL ago.
func (t *tails) orphan(p *pair) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	woken := false
	for id, c := range t.cursors {
		switch {
		case c.owner == p && c.oplog != nil:
			delete(t.cursors, id) // the front's own: nothing in the backend to wait for
		case c.owner == p:
			c.owner, c.orphaned = nil, now
			if !woken { // a getMore may be waiting on it already
				close(t.changed)
				t.changed = make(chan struct{})
				woken = true
			}
		case !c.orphaned.IsZero() && now.Sub(c.orphaned) > orphanTTL:
			delete(t.cursors, id)
		}
	}
}

// isTailableAwait reports whether a find asks for a tailable awaitData
// cursor.
func isTailableAwait(body bsoncore.Document) bool {
	return boolField(body, "tailable") && boolField(body, "awaitData")
}

func boolField(doc bsoncore.Document, key string) bool {
	v, err := doc.LookupErr(key)
	if err != nil {
		return false
	}
	if b, ok := v.BooleanOK(); ok {
		return b
	}
	return v.IsNumber() && v.AsFloat64() != 0
}

// intField returns a numeric field of doc.
func intField(doc bsoncore.Document, key string) (int64, bool) {
	v, err := doc.LookupErr(key)
	if err != nil || !v.IsNumber() {
		return 0, false
	}
	return v.AsInt64(), true
}

// cursorReply is what the front needs to know of a find or getMore reply.
type cursorReply struct {
	ok    bool
	code  int32
	id    int64
	batch int // documents in firstBatch or nextBatch
}

func parseCursorReply(msg []byte) (cursorReply, bool) {
	body, ok := replyBody(msg)
	if !ok {
		return cursorReply{}, false
	}
	var r cursorReply
	if v, err := body.LookupErr("ok"); err == nil && v.IsNumber() {
		r.ok = v.AsFloat64() == 1
	}
	if !r.ok {
		if code, ok := intField(body, "code"); ok {
			r.code = int32(code)
		}
		return r, true
	}
	cur, err := body.LookupErr("cursor")
	if err != nil {
		return cursorReply{}, false
	}
	doc, ok := cur.DocumentOK()
	if !ok {
		return cursorReply{}, false
	}
	if r.id, ok = intField(doc, "id"); !ok {
		return cursorReply{}, false
	}
	for _, key := range []string{"firstBatch", "nextBatch"} {
		if v, err := doc.LookupErr(key); err == nil {
			arr, ok := v.ArrayOK()
			if !ok {
				return cursorReply{}, false
			}
			vals, err := arr.Values()
			if err != nil {
				return cursorReply{}, false
			}
			r.batch = len(vals)
		}
	}
	return r, true
}

// tailFind forwards a tailable awaitData find as a plain tailable find and
// tracks the cursor it opens.
func (p *pair) tailFind(backend net.Conn, msg []byte, req request, responses <-chan []byte, clientGone <-chan struct{}) ([][]byte, error) {
	t := p.f.tails
	seen, _ := t.snapshot()
	out, err := p.roundTrip(backend, withoutFields(msg, req, "awaitData"), req, responses, clientGone, 0)
	if err != nil || len(out) != 1 {
		return out, err
	}
	r, ok := parseCursorReply(out[0])
	if !ok || !r.ok || r.id == 0 {
		return out, nil
	}
	batchSize, ok := intField(req.body, "batchSize")
	if !ok {
		batchSize = defaultFindBatchSize
	}
	t.mu.Lock()
	t.cursors[r.id] = &tailCursor{owner: p, seen: seen, pending: int64(r.batch) >= batchSize}
	t.mu.Unlock()
	return out, nil
}

// tailGetMore answers a getMore on a tracked cursor: it forwards it (without
// maxTimeMS, which a plain tailable cursor refuses) when the cursor may have
// something new, and otherwise waits for a write until the client's
// maxTimeMS ends. A getMore on an orphaned cursor is forwarded at once, so
// that the client learns from the backend that the cursor is gone.
func (p *pair) tailGetMore(backend net.Conn, msg []byte, req request, id int64, responses <-chan []byte, clientGone <-chan struct{}) ([][]byte, error) {
	t := p.f.tails
	wait := defaultAwaitTime
	if ms, ok := intField(req.body, "maxTimeMS"); ok {
		wait = time.Duration(max(ms, 0)) * time.Millisecond
	}
	batchSize, ok := intField(req.body, "batchSize")
	if !ok || batchSize <= 0 {
		batchSize = defaultGetMoreBatchSize
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	fwd := withoutFields(msg, req, "maxTimeMS")
	for {
		t.mu.Lock()
		c := t.cursors[id]
		if c == nil { // killed meanwhile: let the backend say so
			t.mu.Unlock()
			return p.roundTrip(backend, msg, req, responses, clientGone, 0)
		}
		writes, changed := t.writes, t.changed
		orphaned := !c.orphaned.IsZero()
		forward := c.pending || writes != c.seen || orphaned
		if forward {
			c.seen = writes
		}
		t.mu.Unlock()

		if forward && c.oplog != nil {
			out, done, err := p.oplogGetMore(backend, msg, id, c, batchSize, responses)
			if err != nil || done {
				return out, err
			}
			select {
			case <-timer.C:
				return [][]byte{emptyBatch(parseHeader(msg).requestID, id, req.body)}, nil
			default:
			}
			continue // nothing new yet: wait for the next write
		}
		if forward {
			t.forwarded.Add(1)
			out, err := p.roundTrip(backend, fwd, req, responses, clientGone, 0)
			if err != nil || len(out) != 1 {
				return out, err
			}
			r, ok := parseCursorReply(out[0])
			switch {
			case !ok:
				return out, nil
			case !r.ok:
				if r.code == codeCursorNotFound {
					t.forget(id)
				}
				return out, nil
			case r.id == 0:
				t.forget(id)
				return out, nil
			}
			t.mu.Lock()
			c.pending = int64(r.batch) >= batchSize
			t.mu.Unlock()
			if r.batch > 0 || req.noReply || orphaned {
				return out, nil
			}
			select {
			case <-timer.C:
				return out, nil
			default:
			}
			continue // nothing new yet: wait for the next write
		}

		select {
		case <-changed:
		case <-timer.C:
			return [][]byte{emptyBatch(parseHeader(msg).requestID, id, req.body)}, nil
		case <-clientGone:
			return nil, errClientGone
		case <-p.done:
			return nil, net.ErrClosed
		}
	}
}

// emptyBatch is the backend's reply to a getMore that found nothing.
func emptyBatch(reqID int32, id int64, getMore bsoncore.Document) []byte {
	coll, _ := getMore.Lookup("collection").StringValueOK()
	db, _ := getMore.Lookup("$db").StringValueOK()
	cursor := bsoncore.NewDocumentBuilder().
		AppendArray("nextBatch", bsoncore.NewArrayBuilder().Build()).
		AppendInt64("id", id).
		AppendString("ns", db+"."+coll).
		Build()
	body := bsoncore.NewDocumentBuilder().
		AppendDocument("cursor", cursor).
		AppendDouble("ok", 1).
		Build()
	return encodeReply(reqID, body)
}

// killedCursors returns the ids a killCursors command names.
func killedCursors(body bsoncore.Document) []int64 {
	v, err := body.LookupErr("cursors")
	if err != nil {
		return nil
	}
	arr, ok := v.ArrayOK()
	if !ok {
		return nil
	}
	vals, err := arr.Values()
	if err != nil {
		return nil
	}
	ids := make([]int64, 0, len(vals))
	for _, v := range vals {
		if v.IsNumber() {
			ids = append(ids, v.AsInt64())
		}
	}
	return ids
}
