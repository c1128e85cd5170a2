package embedded

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
)

// Tailing the oplog without reading all of it.
//
// FerretDB answers every getMore of a tailable cursor that has nothing in
// hand by running the cursor's query again from the first document of the
// collection and skipping up to where it was, decoding each document on
// the way: with a 1000-entry oplog one read costs about 100 ms, and a
// tailer reads once after every write.
//
// So the front serves the tailing cursors of the oplog itself, for the
// query a tailer sends (a filter on ts alone, $gte or $gt, or none; no
// projection, sort, skip or limit). It finds the entries after its
// position in SQLite by record id, which the oplog's table is keyed by,
// and converts each stored entry to BSON itself (sjson.go), asking
// FerretDB for an entry by _id (one probe of the lookup index, idindex.go)
// only if it cannot. A read then costs in proportion to the new entries.
// Waits are served as for other tailing cursors (tail.go). When the entry
// a cursor stood on has been trimmed away, its next getMore fails with
// CappedPositionLost, as MongoDB's would.

// codeCappedPositionLost is MongoDB's error for a tailing cursor whose
// position was deleted from its capped collection.
const codeCappedPositionLost = 136

// oplogTail is the state of a cursor the front serves; guarded by tails.mu.
type oplogTail struct {
	last int64 // record id of the last entry returned
}

// oplogRef is what SQLite tells of an oplog entry.
type oplogRef struct {
	record int64
	id     [12]byte // the entry's ObjectID
	stored []byte   // the entry as FerretDB stores it (SJSON)
}

// oplogTailQuery recognizes a tailer's find on the oplog and returns the
// lowest ts (as MongoDB's 64-bit timestamp) the cursor starts at.
func oplogTailQuery(body bsoncore.Document) (from uint64, ok bool) {
	if db, _ := body.Lookup("$db").StringValueOK(); db != OplogDatabase {
		return 0, false
	}
	if coll, _ := body.Lookup("find").StringValueOK(); coll != OplogCollection {
		return 0, false
	}
	elems, err := body.Elements()
	if err != nil {
		return 0, false
	}
	for _, e := range elems {
		switch e.Key() {
		case "find", "tailable", "awaitData", "batchSize", "maxTimeMS", "$db", "lsid", "$clusterTime", "$readPreference", "comment", "filter":
		default:
			return 0, false
		}
	}
	v, err := body.LookupErr("filter")
	if err != nil {
		return 0, true
	}
	filter, ok := v.DocumentOK()
	if !ok {
		return 0, false
	}
	fe, err := filter.Elements()
	if err != nil || len(fe) > 1 {
		return 0, false
	}
	if len(fe) == 0 {
		return 0, true
	}
	if fe[0].Key() != "ts" {
		return 0, false
	}
	ops, ok := fe[0].Value().DocumentOK()
	if !ok {
		return 0, false
	}
	oe, err := ops.Elements()
	if err != nil || len(oe) != 1 {
		return 0, false
	}
	t, i, ok := oe[0].Value().TimestampOK()
	if !ok {
		return 0, false
	}
	ts := uint64(t)<<32 | uint64(i)
	switch oe[0].Key() {
	case "$gte":
		return ts, true
	case "$gt":
		return ts + 1, true
	}
	return 0, false
}

// oplogRefs returns up to limit entries after record id after whose ts is
// at least from, in order.
func (x *idIndexes) oplogRefs(ctx context.Context, after int64, from uint64, limit int) ([]oplogRef, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	h, table, err := x.oplogTable(ctx)
	if err != nil {
		return nil, err
	}
	q := `SELECT _ferretdb_record_id, _ferretdb_sjson->>'$._id', _ferretdb_sjson FROM ` + sqlIdent(table) + ` WHERE _ferretdb_record_id > ?`
	args := []any{after}
	if from > 0 {
		q += ` AND CAST(_ferretdb_sjson->>'$.ts' AS INTEGER) >= ?`
		args = append(args, int64(from))
	}
	q += ` ORDER BY _ferretdb_record_id LIMIT ?`
	args = append(args, limit)
	rows, err := h.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []oplogRef
	for rows.Next() {
		var r oplogRef
		var id string
		if err := rows.Scan(&r.record, &id, &r.stored); err != nil {
			return nil, err
		}
		if b, err := hex.DecodeString(id); err != nil || len(b) != 12 {
			return nil, errBadOplogID
		} else {
			copy(r.id[:], b)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// oplogHas reports whether the oplog still holds record id rec.
func (x *idIndexes) oplogHas(ctx context.Context, rec int64) (bool, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	h, table, err := x.oplogTable(ctx)
	if err != nil {
		return false, err
	}
	var one int
	err = h.QueryRowContext(ctx, `SELECT 1 FROM `+sqlIdent(table)+` WHERE _ferretdb_record_id = ?`, rec).Scan(&one)
	if err == sql.ErrNoRows {
		return false, nil
	}
	return err == nil, err
}

// oplogTable returns the handle and table of the oplog; x.mu is held.
func (x *idIndexes) oplogTable(ctx context.Context) (*sql.DB, string, error) {
	c := x.ensureLocked(ctx, OplogDatabase, OplogCollection)
	if c == nil {
		return nil, "", errNoOplogTable
	}
	h, err := x.open(OplogDatabase)
	if err != nil || h == nil {
		return nil, "", errNoOplogTable
	}
	return h, c.table, nil
}

type oplogError string

func (e oplogError) Error() string { return string(e) }

const (
	errNoOplogTable = oplogError("the oplog's table is not known")
	errBadOplogID   = oplogError("an oplog entry has no ObjectID _id")
)

// oplogEntries returns the entries refs names: converted from what SQLite
// returned, or else fetched from the backend by _id. missing is set when
// one of those fetched was trimmed meanwhile: the cursor's position is
// then lost, never silently skipped over.
func (p *pair) oplogEntries(backend net.Conn, refs []oplogRef, responses <-chan []byte) (docs []bsoncore.Document, missing bool, err error) {
	docs = make([]bsoncore.Document, 0, len(refs))
	for _, r := range refs {
		d, cerr := sjsonToBSON(r.stored)
		if cerr == nil {
			if oid, ok := d.Lookup("_id").ObjectIDOK(); ok && oid == r.id {
				docs = append(docs, d)
				continue
			}
			cerr = errBadOplogID
		}
		p.f.log.Debug("reading an oplog entry through FerretDB", "err", cerr)
		d, ok, err := p.findByID(backend, OplogDatabase, OplogCollection, bsoncore.Value{Type: bsoncore.TypeObjectID, Data: r.id[:]}, responses)
		switch {
		case err != nil:
			return nil, false, err
		case !ok:
			return nil, false, oplogError("a read of the oplog by _id failed")
		case d == nil:
			return nil, true, nil
		}
		docs = append(docs, d)
	}
	return docs, false, nil
}

// cursorBatch is a find's or getMore's reply with docs.
func cursorBatch(reqID int32, field string, id int64, docs []bsoncore.Document) []byte {
	arr := bsoncore.NewArrayBuilder()
	for _, d := range docs {
		arr.AppendDocument(d)
	}
	cursor := bsoncore.NewDocumentBuilder().
		AppendArray(field, arr.Build()).
		AppendInt64("id", id).
		AppendString("ns", OplogDatabase+"."+OplogCollection).
		Build()
	return encodeReply(reqID, bsoncore.NewDocumentBuilder().AppendDocument("cursor", cursor).AppendDouble("ok", 1).Build())
}

// errorReply is an {ok: 0} reply.
func errorReply(reqID int32, code int32, name, msg string) []byte {
	return encodeReply(reqID, bsoncore.NewDocumentBuilder().
		AppendDouble("ok", 0).AppendString("errmsg", msg).AppendInt32("code", code).AppendString("codeName", name).Build())
}

// oplogFind opens a tailing cursor on the oplog that the front serves. As
// on FerretDB, a cursor whose first batch is empty is closed at once.
func (p *pair) oplogFind(backend net.Conn, msg []byte, req request, from uint64, responses <-chan []byte) ([][]byte, error) {
	t := p.f.tails
	seen, _ := t.snapshot()
	batchSize, ok := intField(req.body, "batchSize")
	if !ok || batchSize <= 0 {
		batchSize = defaultFindBatchSize
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.f.timeout)
	defer cancel()
	reqID := parseHeader(msg).requestID
	refs, err := p.f.ids.oplogRefs(ctx, 0, from, int(batchSize))
	if err != nil {
		return [][]byte{errorReply(reqID, 1, "InternalError", "read the oplog: "+err.Error())}, nil
	}
	docs, missing, err := p.oplogEntries(backend, refs, responses)
	if err != nil {
		var oe oplogError
		if errors.As(err, &oe) {
			return [][]byte{errorReply(reqID, 1, "InternalError", err.Error())}, nil
		}
		return nil, err
	}
	if missing {
		return [][]byte{errorReply(reqID, codeCappedPositionLost, "CappedPositionLost",
			"an oplog entry was trimmed while the cursor read it")}, nil
	}
	if len(docs) == 0 {
		return [][]byte{cursorBatch(reqID, "firstBatch", 0, nil)}, nil
	}
	t.mu.Lock()
	id := rand.Int64N(1<<62) + 1
	for t.cursors[id] != nil {
		id = rand.Int64N(1<<62) + 1
	}
	p.f.served.Add(1)
	t.cursors[id] = &tailCursor{owner: p, seen: seen, pending: len(refs) == int(batchSize),
		oplog: &oplogTail{last: refs[len(refs)-1].record}}
	t.mu.Unlock()
	return [][]byte{cursorBatch(reqID, "firstBatch", id, docs)}, nil
}

// oplogNext reads what follows cursor c's position, up to batchSize
// entries. lost is set when the position has been trimmed away. readErr is
// a failed read of the oplog, to answer with; connErr a failed backend
// connection, which ends the pair.
func (p *pair) oplogNext(backend net.Conn, c *tailCursor, batchSize int64, responses <-chan []byte) (docs []bsoncore.Document, more, lost bool, readErr, connErr error) {
	t := p.f.tails
	t.mu.Lock()
	last := c.oplog.last
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), p.f.timeout)
	defer cancel()
	refs, err := p.f.ids.oplogRefs(ctx, last, 0, int(batchSize))
	if err != nil {
		return nil, false, false, err, nil
	}
	// Capped collections lose their oldest entries first: while the last
	// entry returned is still there, nothing after it was trimmed.
	has, err := p.f.ids.oplogHas(ctx, last)
	switch {
	case err != nil:
		return nil, false, false, err, nil
	case !has:
		return nil, false, true, nil, nil
	case len(refs) == 0:
		return nil, false, false, nil, nil
	}
	docs, missing, err := p.oplogEntries(backend, refs, responses)
	if err != nil {
		var oe oplogError
		if errors.As(err, &oe) {
			return nil, false, false, err, nil
		}
		return nil, false, false, nil, err
	}
	if missing {
		return nil, false, true, nil, nil
	}
	t.mu.Lock()
	c.oplog.last = refs[len(refs)-1].record
	t.mu.Unlock()
	return docs, len(refs) == int(batchSize), false, nil, nil
}

// oplogGetMore answers a getMore on a cursor the front serves, once the
// caller found it may have something new. done is false when nothing new
// turned up and the caller should wait for the next write.
func (p *pair) oplogGetMore(backend net.Conn, msg []byte, id int64, c *tailCursor, batchSize int64, responses <-chan []byte) (out [][]byte, done bool, err error) {
	reqID := parseHeader(msg).requestID
	docs, more, lost, readErr, connErr := p.oplogNext(backend, c, batchSize, responses)
	t := p.f.tails
	switch {
	case connErr != nil:
		return nil, true, connErr
	case readErr != nil:
		t.forget(id)
		return [][]byte{errorReply(reqID, 1, "InternalError", "read the oplog: "+readErr.Error())}, true, nil
	case lost:
		t.forget(id)
		return [][]byte{errorReply(reqID, codeCappedPositionLost, "CappedPositionLost",
			"CollectionScan died due to position in capped collection being deleted")}, true, nil
	}
	t.mu.Lock()
	c.pending = more
	t.mu.Unlock()
	if len(docs) == 0 {
		return nil, false, nil
	}
	p.f.served.Add(1)
	return [][]byte{cursorBatch(reqID, "nextBatch", id, docs)}, true, nil
}
