package embedded

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"
)

// opMsg builds an OP_MSG with body as its kind 0 section, optional
// document sequences (identifier, documents) and flags.
func opMsg(reqID int32, flags wiremessage.MsgFlag, body bsoncore.Document, seq ...any) []byte {
	idx, msg := wiremessage.AppendHeaderStart(nil, reqID, 0, wiremessage.OpMsg)
	msg = wiremessage.AppendMsgFlags(msg, flags)
	msg = wiremessage.AppendMsgSectionType(msg, wiremessage.SingleDocument)
	msg = append(msg, body...)
	for i := 0; i+1 < len(seq); i += 2 {
		msg = wiremessage.AppendMsgSectionType(msg, wiremessage.DocumentSequence)
		sidx, m := bsoncore.ReserveLength(msg)
		m = append(m, seq[i].(string)...)
		m = append(m, 0)
		for _, d := range seq[i+1].([]bsoncore.Document) {
			m = append(m, d...)
		}
		msg = bsoncore.UpdateLength(m, sidx, int32(len(m)-int(sidx)))
	}
	if flags&wiremessage.ChecksumPresent != 0 {
		msg = append(msg, 0, 0, 0, 0)
	}
	binary.LittleEndian.PutUint32(msg[idx:], uint32(len(msg)))
	return msg
}

func cmd(name string, rest ...func(*bsoncore.DocumentBuilder)) bsoncore.Document {
	b := bsoncore.NewDocumentBuilder().AppendInt32(name, 1)
	for _, f := range rest {
		f(b)
	}
	return b.AppendString("$db", "test").Build()
}

func opQuery(ns string, query bsoncore.Document) []byte {
	idx, msg := wiremessage.AppendHeaderStart(nil, 7, 0, wiremessage.OpQuery)
	msg = wiremessage.AppendQueryFlags(msg, 0)
	msg = wiremessage.AppendQueryFullCollectionName(msg, ns)
	msg = wiremessage.AppendQueryNumberToSkip(msg, 0)
	msg = wiremessage.AppendQueryNumberToReturn(msg, -1)
	msg = append(msg, query...)
	binary.LittleEndian.PutUint32(msg[idx:], uint32(len(msg)))
	return msg
}

func TestClassify(t *testing.T) {
	pipeline := func(stages ...string) func(*bsoncore.DocumentBuilder) {
		return func(b *bsoncore.DocumentBuilder) {
			arr := bsoncore.NewArrayBuilder()
			for _, s := range stages {
				arr.AppendDocument(bsoncore.NewDocumentBuilder().AppendDocument(s, bsoncore.NewDocumentBuilder().Build()).Build())
			}
			b.AppendArray("pipeline", arr.Build())
		}
	}
	doc := bsoncore.NewDocumentBuilder().AppendString("_id", "a").Build()
	garbled := opMsg(1, 0, cmd("find"))
	garbled[headerLen+4+1] = 0xff // body length byte: the document no longer fits
	short := opMsg(1, 0, cmd("find"))[:headerLen+2]
	twoBodies := opMsg(1, 0, cmd("find"))
	twoBodies = append(twoBodies, 0)
	twoBodies = append(twoBodies, cmd("ping")...)
	binary.LittleEndian.PutUint32(twoBodies, uint32(len(twoBodies)))

	tests := []struct {
		name    string
		msg     []byte
		command string
		write   bool
		noReply bool
	}{
		{"find", opMsg(1, 0, cmd("find")), "find", false, false},
		{"getMore", opMsg(1, 0, cmd("getMore")), "getMore", false, false},
		{"hello", opMsg(1, 0, cmd("hello")), "hello", false, false},
		{"isMaster lower", opMsg(1, 0, cmd("ismaster")), "ismaster", false, false},
		{"aggregate plain", opMsg(1, 0, cmd("aggregate", pipeline("$match", "$sort"))), "aggregate", false, false},
		{"aggregate $out", opMsg(1, 0, cmd("aggregate", pipeline("$match", "$out"))), "aggregate", true, false},
		{"aggregate $merge", opMsg(1, 0, cmd("aggregate", pipeline("$merge"))), "aggregate", true, false},
		{"insert with document sequence", opMsg(1, 0, cmd("insert"), "documents", []bsoncore.Document{doc, doc}), "insert", true, false},
		{"update", opMsg(1, 0, cmd("update")), "update", true, false},
		{"findAndModify", opMsg(1, 0, cmd("findAndModify")), "findAndModify", true, false},
		{"findandmodify", opMsg(1, 0, cmd("findandmodify")), "findandmodify", true, false},
		{"create", opMsg(1, 0, cmd("create")), "create", true, false},
		{"compact", opMsg(1, 0, cmd("compact")), "compact", true, false},
		{"unknown command", opMsg(1, 0, cmd("frobnicate")), "frobnicate", true, false},
		{"case matters", opMsg(1, 0, cmd("FIND")), "FIND", true, false},
		{"unacknowledged insert", opMsg(1, wiremessage.MoreToCome, cmd("insert")), "insert", true, true},
		{"checksum present", opMsg(1, wiremessage.ChecksumPresent, cmd("find")), "find", false, false},
		{"OP_QUERY isMaster", opQuery("admin.$cmd", cmd("isMaster")), "isMaster", false, false},
		{"OP_QUERY insert", opQuery("test.$cmd", cmd("insert")), "insert", true, false},
		{"garbled body", garbled, "", true, false},
		{"truncated", short, "", true, false},
		{"two bodies", twoBodies, "", true, false},
		{"empty body", opMsg(1, 0, bsoncore.NewDocumentBuilder().Build()), "", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := classify(tt.msg)
			if got.command != tt.command || got.write != tt.write || got.noReply != tt.noReply {
				t.Errorf("classify = %+v, want command %q write %v noReply %v", got, tt.command, tt.write, tt.noReply)
			}
		})
	}
}

func TestClassifyOtherOpcodes(t *testing.T) {
	for _, op := range []wiremessage.OpCode{wiremessage.OpCompressed, wiremessage.OpInsert, wiremessage.OpReply, 4242} {
		msg := wiremessage.AppendHeader(nil, headerLen+4, 1, 0, op)
		msg = append(msg, 0, 0, 0, 0)
		if got := classify(msg); !got.write {
			t.Errorf("opcode %v classified as read", op)
		}
	}
}

func TestReadMessage(t *testing.T) {
	valid := opMsg(9, 0, cmd("ping"))
	big := make([]byte, 3<<20)
	binary.LittleEndian.PutUint32(big, uint32(len(big)))
	lenOnly := func(n int32) []byte {
		b := make([]byte, 4)
		binary.LittleEndian.PutUint32(b, uint32(n))
		return b
	}
	tests := []struct {
		name    string
		in      []byte
		max     int
		want    []byte
		wantErr error
	}{
		{"valid", valid, MaxMessageSize, valid, nil},
		{"larger than one chunk", big, MaxMessageSize, big, nil},
		{"empty stream", nil, MaxMessageSize, nil, io.EOF},
		{"cut in length", valid[:2], MaxMessageSize, nil, io.ErrUnexpectedEOF},
		{"cut in body", valid[:len(valid)-1], MaxMessageSize, nil, io.ErrUnexpectedEOF},
		{"length below header", lenOnly(15), MaxMessageSize, nil, errMessageLength},
		{"negative length", lenOnly(-1), MaxMessageSize, nil, errMessageLength},
		{"length over the limit", lenOnly(MaxMessageSize + 1), MaxMessageSize, nil, errMessageLength},
		{"over a small limit", valid, 20, nil, errMessageLength},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readMessage(bufio.NewReader(bytes.NewReader(tt.in)), tt.max)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("message differs: got %d bytes, want %d", len(got), len(tt.want))
			}
		})
	}
}

func TestReadMessageSequence(t *testing.T) {
	a, b := opMsg(1, 0, cmd("ping")), opMsg(2, 0, cmd("find"))
	r := bufio.NewReader(bytes.NewReader(append(append([]byte{}, a...), b...)))
	for i, want := range [][]byte{a, b} {
		got, err := readMessage(r, MaxMessageSize)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if _, err := readMessage(r, MaxMessageSize); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last message: %v, want io.EOF", err)
	}
}
