package embedded

import (
	"context"
	"encoding/binary"
	"net"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"
)

// Conditional writes pinned by _id.
//
// FerretDB hands SQLite nothing but a filter that is exactly {_id: <string
// or ObjectID>}; with any other filter it reads and decodes the whole
// collection. A compare-and-swap of one document, whose filter pins _id
// and some more fields (every write of the resource store), so costs time
// in proportion to the collection: 3 ms at 100 documents, 41 ms at 3000.
//
// Writes run one at a time through the front, so while it holds the write
// lock the front can split such a write in two: it reads the document by
// _id (from SQLite through the lookup index, converting it itself, or
// else from FerretDB) and checks the rest of the filter itself
// (matchFilter); then it forwards the write with its filter reduced to
// {_id}, or answers "nothing matched" as the backend would. No other write
// can come between the read and the write. Writes the front cannot judge
// (other operators, arrays, upserts, several statements, sorts, hints,
// collations, unacknowledged writes) are forwarded unchanged.

// defaultPinMin is the estimated collection size from which the front
// splits conditional writes: below it, the backend's scan is as cheap as
// the extra read (BenchmarkCompareAndSwap, documents shaped like the
// resource store's: even at 2 to 5 documents, 0.4 ms saved at 10, 1 ms at
// 20, 48 ms at 1000).
const defaultPinMin = 4

// pinnedWrite is a single-document conditional write that the front can
// run as a read by _id and a write by _id.
type pinnedWrite struct {
	db, coll string
	id       bsoncore.Value
	filter   bsoncore.Document
	// rewritten is the message with the filter reduced to {_id}, encoded
	// only when the write is sent (rewrite).
	rewritten msgParts
	header    header
	// noMatch is the body of the backend's reply when nothing matched.
	noMatch bsoncore.Document
}

// msgParts are the sections of an OP_MSG.
type msgParts struct {
	flags wiremessage.MsgFlag
	body  bsoncore.Document
	seqs  []docSequence
}

// docSequence is a kind 1 section.
type docSequence struct {
	id   string
	docs []bsoncore.Document
}

// parseMsg splits an OP_MSG into its flags (checksum dropped), its body,
// validated, and its document sequences.
func parseMsg(msg []byte) (msgParts, bool) {
	var p msgParts
	if parseHeader(msg).opCode != wiremessage.OpMsg {
		return p, false
	}
	flags, sections, ok := wiremessage.ReadMsgFlags(msg[headerLen:])
	if !ok {
		return p, false
	}
	if flags&wiremessage.ChecksumPresent != 0 {
		if len(sections) < 4 {
			return p, false
		}
		sections = sections[:len(sections)-4]
		flags &^= wiremessage.ChecksumPresent
	}
	p.flags = flags
	for len(sections) > 0 {
		kind, rem, ok := wiremessage.ReadMsgSectionType(sections)
		if !ok {
			return p, false
		}
		switch kind {
		case wiremessage.SingleDocument:
			doc, rest, ok := wiremessage.ReadMsgSectionSingleDocument(rem)
			if !ok || p.body != nil || doc.Validate() != nil {
				return p, false
			}
			p.body, sections = doc, rest
		case wiremessage.DocumentSequence:
			id, docs, rest, ok := wiremessage.ReadMsgSectionDocumentSequence(rem)
			if !ok {
				return p, false
			}
			p.seqs = append(p.seqs, docSequence{id: id, docs: docs})
			sections = rest
		default:
			return p, false
		}
	}
	return p, p.body != nil
}

// encode returns the parts as an OP_MSG with msg's header fields.
func (p msgParts) encode(h header) []byte {
	idx, out := wiremessage.AppendHeaderStart(nil, h.requestID, h.responseTo, wiremessage.OpMsg)
	out = wiremessage.AppendMsgFlags(out, p.flags)
	out = wiremessage.AppendMsgSectionType(out, wiremessage.SingleDocument)
	out = append(out, p.body...)
	for _, s := range p.seqs {
		out = wiremessage.AppendMsgSectionType(out, wiremessage.DocumentSequence)
		start := len(out)
		out = append(out, 0, 0, 0, 0)
		out = append(out, s.id...)
		out = append(out, 0)
		for _, d := range s.docs {
			out = append(out, d...)
		}
		binary.LittleEndian.PutUint32(out[start:], uint32(len(out)-start))
	}
	binary.LittleEndian.PutUint32(out[idx:], uint32(len(out)))
	return out
}

// planPinned recognizes a write the front can pin by _id.
func planPinned(msg []byte, req request) (*pinnedWrite, bool) {
	if req.noReply || req.body == nil {
		return nil, false
	}
	switch req.command {
	case "update", "delete", "findAndModify":
	default:
		return nil, false
	}
	parts, ok := parseMsg(msg)
	if !ok {
		return nil, false
	}
	db, _ := parts.body.Lookup("$db").StringValueOK()
	coll, _ := parts.body.Lookup(req.command).StringValueOK()
	if db == "" || coll == "" {
		return nil, false
	}
	w := &pinnedWrite{db: db, coll: coll}
	var ok2 bool
	switch req.command {
	case "update":
		ok2 = w.planStatement(&parts, "updates", "q", map[string]bool{"q": true, "u": true, "upsert": false, "multi": false})
		w.noMatch = bsoncore.NewDocumentBuilder().AppendInt32("n", 0).AppendInt32("nModified", 0).AppendDouble("ok", 1).Build()
	case "delete":
		ok2 = w.planStatement(&parts, "deletes", "q", map[string]bool{"q": true, "limit": true})
		w.noMatch = bsoncore.NewDocumentBuilder().AppendInt32("n", 0).AppendDouble("ok", 1).Build()
	case "findAndModify":
		ok2 = w.planFindAndModify(&parts)
	}
	if !ok2 {
		return nil, false
	}
	w.rewritten, w.header = parts, parseHeader(msg)
	return w, true
}

// planStatement plans an update or delete command: exactly one statement
// (in the body's array or a document sequence), with only the allowed
// fields (those mapped to false must be absent or false), whose filter
// pins _id and more.
func (w *pinnedWrite) planStatement(parts *msgParts, field, filterField string, allowed map[string]bool) bool {
	var stmts []bsoncore.Document
	seq := -1
	for i, s := range parts.seqs {
		if s.id == field {
			stmts, seq = s.docs, i
		}
	}
	inBody := false
	if v, err := parts.body.LookupErr(field); err == nil {
		arr, ok := v.ArrayOK()
		if !ok || seq >= 0 {
			return false
		}
		vals, err := arr.Values()
		if err != nil {
			return false
		}
		for _, v := range vals {
			d, ok := v.DocumentOK()
			if !ok {
				return false
			}
			stmts = append(stmts, d)
		}
		inBody = true
	}
	if len(stmts) != 1 {
		return false
	}
	stmt := stmts[0]
	elems, err := stmt.Elements()
	if err != nil {
		return false
	}
	for _, e := range elems {
		must, known := allowed[e.Key()]
		if !known {
			return false
		}
		if !must {
			if b, ok := e.Value().BooleanOK(); !ok || b {
				return false
			}
		}
		if e.Key() == "limit" {
			if n, ok := e.Value().AsInt64OK(); !ok || n > 1 {
				return false
			}
		}
	}
	if !w.setFilter(stmt.Lookup(filterField)) {
		return false
	}
	newStmt := replaceField(stmt, filterField, idFilter(w.id))
	if inBody {
		arr := bsoncore.NewArrayBuilder().AppendDocument(newStmt).Build()
		parts.body = replaceFieldValue(parts.body, field, bsoncore.Value{Type: bsoncore.TypeArray, Data: arr})
	} else {
		parts.seqs[seq].docs = []bsoncore.Document{newStmt}
	}
	return true
}

// planFindAndModify plans a findAndModify without upsert, sort, hint,
// collation or array filters.
func (w *pinnedWrite) planFindAndModify(parts *msgParts) bool {
	for _, f := range []string{"sort", "hint", "collation", "arrayFilters", "let"} {
		if v, err := parts.body.LookupErr(f); err == nil {
			if d, ok := v.DocumentOK(); !ok || len(d) > 5 {
				return false // present and not empty
			}
		}
	}
	if v, err := parts.body.LookupErr("upsert"); err == nil {
		if b, ok := v.BooleanOK(); !ok || b {
			return false
		}
	}
	if !w.setFilter(parts.body.Lookup("query")) {
		return false
	}
	remove := false
	if v, err := parts.body.LookupErr("remove"); err == nil {
		b, ok := v.BooleanOK()
		if !ok {
			return false
		}
		remove = b
	}
	leo := bsoncore.NewDocumentBuilder().AppendInt32("n", 0)
	if !remove {
		leo.AppendBoolean("updatedExisting", false)
	}
	w.noMatch = bsoncore.NewDocumentBuilder().
		AppendDocument("lastErrorObject", leo.Build()).
		AppendNull("value").
		AppendDouble("ok", 1).Build()
	parts.body = replaceField(parts.body, "query", idFilter(w.id))
	return true
}

// setFilter takes the write's filter if it pins _id by equality and has
// more to check (a filter of _id alone is pushed down already).
func (w *pinnedWrite) setFilter(v bsoncore.Value) bool {
	f, ok := v.DocumentOK()
	if !ok {
		return false
	}
	id, ok := idEquality(f)
	if !ok {
		return false
	}
	if n, err := f.Elements(); err != nil || len(n) < 2 {
		return false
	}
	w.id, w.filter = id, f
	return true
}

// replaceField returns doc with the value of key replaced by sub.
func replaceField(doc bsoncore.Document, key string, sub bsoncore.Document) bsoncore.Document {
	return replaceFieldValue(doc, key, bsoncore.Value{Type: bsoncore.TypeEmbeddedDocument, Data: sub})
}

func replaceFieldValue(doc bsoncore.Document, key string, v bsoncore.Value) bsoncore.Document {
	elems, _ := doc.Elements()
	idx, out := bsoncore.AppendDocumentStart(nil)
	for _, e := range elems {
		if e.Key() == key {
			out = bsoncore.AppendValueElement(out, key, v)
			continue
		}
		out = append(out, e...)
	}
	out, _ = bsoncore.AppendDocumentEnd(out, idx)
	return out
}

// pinnedRoundTrip runs a planned write under the write lock: it reads the
// document by _id and, as the rest of the filter decides, forwards the
// rewritten write or answers that nothing matched. handled is false when
// the front could not judge (the caller forwards the original message).
func (p *pair) pinnedRoundTrip(backend net.Conn, msg []byte, w *pinnedWrite, responses <-chan []byte) (out [][]byte, handled bool, err error) {
	doc, ok, err := p.readByID(backend, w.db, w.coll, w.id, responses)
	if err != nil {
		return nil, true, err // the backend connection is lost
	}
	if !ok {
		return nil, false, nil
	}
	v := missed
	if doc != nil {
		v = matchFilter(doc, w.filter, "_id")
	}
	switch v {
	case matched:
		p.f.pinned.Add(1)
		out, err := p.roundTrip(backend, w.rewritten.encode(w.header), request{command: "write"}, responses, nil, p.f.timeout)
		return out, true, err
	case missed:
		p.f.pinned.Add(1)
		return [][]byte{encodeReply(parseHeader(msg).requestID, w.noMatch)}, true, nil
	}
	return nil, false, nil
}

// readByID reads the document of db.coll whose _id is id: from SQLite
// when it can (idIndexes.storedByID), else from the backend (findByID).
func (p *pair) readByID(backend net.Conn, db, coll string, id bsoncore.Value, responses <-chan []byte) (doc bsoncore.Document, ok bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.f.timeout)
	doc, ok = p.f.ids.storedByID(ctx, db, coll, id)
	cancel()
	if ok {
		p.f.readsFromSQLite.Add(1)
		return doc, true, nil
	}
	return p.findByID(backend, db, coll, id, responses)
}

// findByID reads the document of db.coll whose _id is id from the
// backend, a lookup FerretDB pushes down to SQLite for strings and
// ObjectIDs. doc is nil when there is none; ok is false when the backend's
// reply is not a cursor of at most one document (an error reply among
// them); err is a failure of the backend connection, which ends the pair.
func (p *pair) findByID(backend net.Conn, db, coll string, id bsoncore.Value, responses <-chan []byte) (doc bsoncore.Document, ok bool, err error) {
	find := encodeCommand(db, bsoncore.NewDocumentBuilder().
		AppendString("find", coll).
		AppendDocument("filter", idFilter(id)).
		AppendInt64("limit", 1).
		AppendBoolean("singleBatch", true).
		Build())
	replies, err := p.roundTrip(backend, find, request{command: "find"}, responses, nil, p.f.timeout)
	if err != nil || len(replies) != 1 {
		return nil, false, err
	}
	body, ok := replyBody(replies[0])
	if !ok {
		return nil, false, nil
	}
	if okv, err := body.LookupErr("ok"); err != nil || !okv.IsNumber() || okv.AsFloat64() != 1 {
		return nil, false, nil
	}
	batch, err := body.LookupErr("cursor", "firstBatch")
	if err != nil {
		return nil, false, nil
	}
	arr, ok := batch.ArrayOK()
	if !ok {
		return nil, false, nil
	}
	docs, err := arr.Values()
	if err != nil || len(docs) > 1 {
		return nil, false, nil
	}
	if len(docs) == 0 {
		return nil, true, nil
	}
	doc, ok = docs[0].DocumentOK()
	return doc, ok, nil
}
