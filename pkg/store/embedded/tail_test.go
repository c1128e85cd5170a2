package embedded

import (
	"bytes"
	"testing"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"
)

func TestWithoutFields(t *testing.T) {
	body := bsoncore.NewDocumentBuilder().
		AppendString("find", "c").AppendBoolean("tailable", true).AppendBoolean("awaitData", true).
		AppendInt32("batchSize", 2).AppendString("$db", "d").Build()
	seq := []bsoncore.Document{bsoncore.NewDocumentBuilder().AppendInt32("x", 1).Build()}
	for _, flags := range []wiremessage.MsgFlag{0, wiremessage.ChecksumPresent, wiremessage.ExhaustAllowed} {
		msg := opMsg(77, flags, body, "documents", seq)
		req := classify(msg)
		out := withoutFields(msg, req, "awaitData", "absent")

		h := parseHeader(out)
		if h.requestID != 77 || h.opCode != wiremessage.OpMsg || int(h.length) != len(out) {
			t.Fatalf("flags %v: header %+v for %d bytes", flags, h, len(out))
		}
		got := classify(out)
		if got.command != "find" || got.write {
			t.Fatalf("flags %v: rewritten message classifies as %+v", flags, got)
		}
		if _, err := got.body.LookupErr("awaitData"); err == nil {
			t.Fatalf("flags %v: awaitData kept", flags)
		}
		if !boolField(got.body, "tailable") || got.body.Lookup("batchSize").Int32() != 2 {
			t.Fatalf("flags %v: other fields lost: %v", flags, got.body)
		}
		gotFlags, _, _ := wiremessage.ReadMsgFlags(out[headerLen:])
		if gotFlags != flags&^wiremessage.ChecksumPresent {
			t.Fatalf("flags %v became %v", flags, gotFlags)
		}
		if !bytes.Contains(out, seq[0]) || !bytes.Contains(out, []byte("documents\x00")) {
			t.Fatalf("flags %v: document sequence lost", flags)
		}
	}
}

func TestParseCursorReply(t *testing.T) {
	batch := func(key string, n int, id int64) []byte {
		arr := bsoncore.NewArrayBuilder()
		for range n {
			arr.AppendDocument(bsoncore.NewDocumentBuilder().AppendInt32("a", 1).Build())
		}
		cur := bsoncore.NewDocumentBuilder().AppendArray(key, arr.Build()).AppendInt64("id", id).AppendString("ns", "d.c").Build()
		return replyTo(1, bsoncore.NewDocumentBuilder().AppendDocument("cursor", cur).AppendDouble("ok", 1).Build())
	}
	failed := replyTo(1, bsoncore.NewDocumentBuilder().AppendDouble("ok", 0).AppendInt32("code", 43).AppendString("errmsg", "gone").Build())
	tests := []struct {
		name string
		msg  []byte
		want cursorReply
		ok   bool
	}{
		{"first batch", batch("firstBatch", 3, 9), cursorReply{ok: true, id: 9, batch: 3}, true},
		{"empty next batch", batch("nextBatch", 0, 9), cursorReply{ok: true, id: 9}, true},
		{"closed", batch("nextBatch", 1, 0), cursorReply{ok: true, batch: 1}, true},
		{"error", failed, cursorReply{code: 43}, true},
		{"no cursor", replyTo(1, bsoncore.NewDocumentBuilder().AppendDouble("ok", 1).Build()), cursorReply{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseCursorReply(tt.msg)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("got %+v %v, want %+v %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestEmptyBatchReply(t *testing.T) {
	getMore := bsoncore.NewDocumentBuilder().AppendInt64("getMore", 5).AppendString("collection", "oplog.rs").
		AppendString("$db", "local").Build()
	msg := emptyBatch(33, 5, getMore)
	if h := parseHeader(msg); h.responseTo != 33 || int(h.length) != len(msg) {
		t.Fatalf("header %+v", h)
	}
	r, ok := parseCursorReply(msg)
	if !ok || r != (cursorReply{ok: true, id: 5}) {
		t.Fatalf("reply %+v %v", r, ok)
	}
	body, _ := replyBody(msg)
	if ns := body.Lookup("cursor", "ns").StringValue(); ns != "local.oplog.rs" {
		t.Fatalf("ns %q", ns)
	}
}
