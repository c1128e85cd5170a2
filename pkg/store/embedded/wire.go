package embedded

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"
)

// MaxMessageSize is the largest wire message, header included, that the
// server accepts from a client: MongoDB's maxMessageSizeBytes.
const MaxMessageSize = 48_000_000

// headerLen is the length of the standard message header (MsgHeader):
// messageLength, requestID, responseTo and opCode, four int32 each.
const headerLen = 16

// errMessageLength reports a message header whose length is out of range.
var errMessageLength = errors.New("message length out of range")

// readMessage reads one complete wire message, header included, from r. A
// clean end of stream before the first byte is io.EOF; a stream that ends
// inside a message is io.ErrUnexpectedEOF. Memory grows with the bytes that
// actually arrive, so a header that merely claims a large length costs
// nothing until the data follows.
func readMessage(r *bufio.Reader, maxSize int) ([]byte, error) {
	var lenBuf [4]byte
	if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
		return nil, err
	}
	n := int(int32(binary.LittleEndian.Uint32(lenBuf[:])))
	if n < headerLen || n > maxSize {
		return nil, fmt.Errorf("%w: %d bytes (limits %d..%d)", errMessageLength, n, headerLen, maxSize)
	}
	const chunk = 1 << 20
	buf := make([]byte, 4, min(n, chunk))
	copy(buf, lenBuf[:])
	for len(buf) < n {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(n, 2*cap(buf)))
			copy(grown, buf)
			buf = grown
		}
		m, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			if len(buf) < n {
				return nil, err
			}
		}
	}
	return buf, nil
}

// header is the decoded standard message header.
type header struct {
	length     int32
	requestID  int32
	responseTo int32
	opCode     wiremessage.OpCode
}

// parseHeader decodes the header of a message read by readMessage.
func parseHeader(msg []byte) header {
	length, reqID, respTo, op, _, _ := wiremessage.ReadHeader(msg)
	return header{length: length, requestID: reqID, responseTo: respTo, opCode: op}
}

// moreToCome reports whether msg is an OP_MSG with the moreToCome flag: a
// request that expects no response, or a response that another follows.
func moreToCome(msg []byte) bool { return wiremessage.IsMsgMoreToCome(msg) }

// readCommands are the commands that do not change data. The front lets them
// run concurrently; every other command, including unknown ones, runs under
// the write lock. A read listed here by mistake could break the atomicity of
// writes, a write missing here only costs latency, so the list is exact
// command names as the server dispatches them.
var readCommands = map[string]bool{
	"buildInfo": true, "buildinfo": true,
	"collStats": true, "connectionStatus": true, "count": true,
	"currentOp": true, "dataSize": true, "dbStats": true, "dbstats": true,
	"distinct": true, "endSessions": true, "explain": true, "find": true,
	"getCmdLineOpts": true, "getFreeMonitoringStatus": true, "getLog": true,
	"getMore": true, "getParameter": true, "hello": true, "hostInfo": true,
	"isMaster": true, "ismaster": true, "killCursors": true,
	"listCollections": true, "listCommands": true, "listDatabases": true,
	"listIndexes": true, "logout": true, "ping": true, "saslContinue": true,
	"saslStart": true, "serverStatus": true, "usersInfo": true,
	"validate": true, "whatsmyuri": true,
	// aggregate is a read unless its pipeline writes ($out, $merge);
	// classify checks the pipeline.
	"aggregate": true,
}

// request describes a client message as the front needs to know it.
type request struct {
	// command is the command name, or "" when the message carries none
	// that could be read.
	command string
	// write tells the message must run under the write lock.
	write bool
	// noReply tells the client expects no response (moreToCome).
	noReply bool
	// body is the command document of an OP_MSG; nil for other opcodes.
	body bsoncore.Document
}

// classify inspects a complete client message. Messages it cannot read are
// writes: they are serialized and the backend judges them.
func classify(msg []byte) request {
	h := parseHeader(msg)
	body := msg[headerLen:]
	switch h.opCode {
	case wiremessage.OpMsg:
		flags, rem, ok := wiremessage.ReadMsgFlags(body)
		if !ok {
			return request{write: true}
		}
		req := request{noReply: flags&wiremessage.MoreToCome != 0}
		if flags&wiremessage.ChecksumPresent != 0 {
			if len(rem) < 4 {
				req.write = true
				return req
			}
			rem = rem[:len(rem)-4]
		}
		doc, found := msgBody(rem)
		if !found {
			req.write = true
			return req
		}
		req.body = doc
		req.command, req.write = classifyCommand(doc)
		return req
	case wiremessage.OpQuery:
		// Legacy handshakes (isMaster over OP_QUERY) arrive this way.
		_, rem, ok := wiremessage.ReadQueryFlags(body)
		if ok {
			_, rem, ok = wiremessage.ReadQueryFullCollectionName(rem)
		}
		if ok {
			_, rem, ok = wiremessage.ReadQueryNumberToSkip(rem)
		}
		if ok {
			_, rem, ok = wiremessage.ReadQueryNumberToReturn(rem)
		}
		var doc bsoncore.Document
		if ok {
			doc, _, ok = wiremessage.ReadQueryQuery(rem)
		}
		if !ok || doc.Validate() != nil {
			return request{write: true}
		}
		var req request
		req.command, req.write = classifyCommand(doc)
		return req
	default:
		// OP_COMPRESSED (never negotiated: the backend offers no
		// compressor) and the removed legacy opcodes.
		return request{write: true}
	}
}

// msgBody returns the body document (the kind 0 section) of OP_MSG sections.
func msgBody(sections []byte) (bsoncore.Document, bool) {
	var body bsoncore.Document
	for len(sections) > 0 {
		kind, rem, ok := wiremessage.ReadMsgSectionType(sections)
		if !ok {
			return nil, false
		}
		switch kind {
		case wiremessage.SingleDocument:
			doc, rest, ok := wiremessage.ReadMsgSectionSingleDocument(rem)
			if !ok || body != nil || doc.Validate() != nil {
				return nil, false
			}
			body, sections = doc, rest
		case wiremessage.DocumentSequence:
			_, _, rest, ok := wiremessage.ReadMsgSectionRawDocumentSequence(rem)
			if !ok {
				return nil, false
			}
			sections = rest
		default:
			return nil, false
		}
	}
	return body, body != nil
}

// classifyCommand returns a command document's name and whether it writes.
func classifyCommand(doc bsoncore.Document) (string, bool) {
	first, err := doc.IndexErr(0)
	if err != nil {
		return "", true
	}
	name, err := first.KeyErr()
	if err != nil {
		return "", true
	}
	if !readCommands[name] {
		return name, true
	}
	if name == "aggregate" {
		return name, pipelineWrites(doc)
	}
	return name, false
}

// pipelineWrites reports whether an aggregate command's pipeline has a
// stage that writes ($out, $merge), or cannot be read.
func pipelineWrites(doc bsoncore.Document) bool {
	v, err := doc.LookupErr("pipeline")
	if err != nil {
		return false // the backend rejects it
	}
	arr, ok := v.ArrayOK()
	if !ok {
		return false
	}
	stages, err := arr.Values()
	if err != nil {
		return true
	}
	for _, s := range stages {
		stage, ok := s.DocumentOK()
		if !ok {
			continue
		}
		if first, err := stage.IndexErr(0); err == nil {
			if k := first.Key(); k == "$out" || k == "$merge" {
				return true
			}
		}
	}
	return false
}

// withoutFields returns an OP_MSG like msg, whose body is req.body, with
// the named fields removed from the body and no checksum. Other sections
// are kept as they are.
func withoutFields(msg []byte, req request, fields ...string) []byte {
	h := parseHeader(msg)
	flags, sections, _ := wiremessage.ReadMsgFlags(msg[headerLen:])
	if flags&wiremessage.ChecksumPresent != 0 {
		sections = sections[:len(sections)-4]
		flags &^= wiremessage.ChecksumPresent
	}
	idx, out := wiremessage.AppendHeaderStart(make([]byte, 0, len(msg)), h.requestID, h.responseTo, h.opCode)
	out = wiremessage.AppendMsgFlags(out, flags)
	for len(sections) > 0 {
		kind, rem, _ := wiremessage.ReadMsgSectionType(sections)
		if kind == wiremessage.SingleDocument {
			_, rest, _ := wiremessage.ReadMsgSectionSingleDocument(rem)
			out = wiremessage.AppendMsgSectionType(out, kind)
			out = appendWithout(out, req.body, fields...)
			sections = rest
			continue
		}
		_, _, rest, _ := wiremessage.ReadMsgSectionRawDocumentSequence(rem)
		out = append(out, sections[:len(sections)-len(rest)]...)
		sections = rest
	}
	binary.LittleEndian.PutUint32(out[idx:], uint32(len(out)))
	return out
}

// appendWithout appends doc without the named top-level fields to dst.
func appendWithout(dst []byte, doc bsoncore.Document, fields ...string) []byte {
	idx, dst := bsoncore.AppendDocumentStart(dst)
	elems, _ := doc.Elements()
	for _, e := range elems {
		keep := true
		for _, f := range fields {
			if e.Key() == f {
				keep = false
				break
			}
		}
		if keep {
			dst = append(dst, e...)
		}
	}
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

// encodeReply returns an OP_MSG reply with body to the request reqID.
func encodeReply(reqID int32, body bsoncore.Document) []byte {
	idx, msg := wiremessage.AppendHeaderStart(nil, requestIDs.Add(1), reqID, wiremessage.OpMsg)
	msg = wiremessage.AppendMsgFlags(msg, 0)
	msg = wiremessage.AppendMsgSectionType(msg, wiremessage.SingleDocument)
	msg = append(msg, body...)
	binary.LittleEndian.PutUint32(msg[idx:], uint32(len(msg)))
	return msg
}

// replyBody returns the body of an OP_MSG reply.
func replyBody(msg []byte) (bsoncore.Document, bool) {
	p, ok := parseMsg(msg)
	return p.body, ok
}

// requestIDs numbers the server's own requests.
var requestIDs atomic.Int32

// commandError is an error reply ({ok: 0}) to a command.
type commandError struct {
	Code    int32
	Name    string
	Message string
}

// Error implements error.
func (e *commandError) Error() string {
	return fmt.Sprintf("command failed: (%s) %s [code %d]", e.Name, e.Message, e.Code)
}

// encodeCommand returns an OP_MSG with cmd as its body, $db appended.
func encodeCommand(db string, cmd bsoncore.Document) []byte {
	elems, _ := cmd.Elements()
	body := make([]byte, 0, len(cmd)+len(db)+16)
	idx, body := bsoncore.AppendDocumentStart(body)
	for _, e := range elems {
		body = append(body, e...)
	}
	body = bsoncore.AppendStringElement(body, "$db", db)
	body, _ = bsoncore.AppendDocumentEnd(body, idx)

	return encodeReply(0, body) // a request is framed like a reply to nothing
}

// runCommand sends cmd on conn and returns the reply's body. An {ok: 0}
// reply is a *commandError. The conn is closed when ctx ends first; callers
// discard a conn after any error.
func runCommand(ctx context.Context, conn net.Conn, r *bufio.Reader, db string, cmd bsoncore.Document) (bsoncore.Document, error) {
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	msg := encodeCommand(db, cmd)
	if _, err := conn.Write(msg); err != nil {
		return nil, ctxOr(ctx, err)
	}
	resp, err := readMessage(r, MaxMessageSize)
	if err != nil {
		return nil, ctxOr(ctx, err)
	}
	if h := parseHeader(resp); h.responseTo != parseHeader(msg).requestID {
		return nil, fmt.Errorf("reply to request %d, want %d", h.responseTo, parseHeader(msg).requestID)
	}
	doc, ok := replyBody(resp)
	if !ok {
		return nil, errors.New("malformed reply")
	}
	if okv, err := doc.LookupErr("ok"); err != nil || !okv.IsNumber() || okv.AsFloat64() != 1 {
		ce := &commandError{}
		if v, err := doc.LookupErr("code"); err == nil && v.IsNumber() {
			ce.Code = v.AsInt32()
		}
		if v, err := doc.LookupErr("codeName"); err == nil {
			ce.Name, _ = v.StringValueOK()
		}
		if v, err := doc.LookupErr("errmsg"); err == nil {
			ce.Message, _ = v.StringValueOK()
		}
		return nil, ce
	}
	return doc, nil
}

// ctxOr returns ctx's error when ctx has ended, else err.
func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
