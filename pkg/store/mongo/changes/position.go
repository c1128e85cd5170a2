package changes

import (
	"encoding/base64"
	"strconv"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/capstanhq/capstan/pkg/errs"
)

// Mode says how a feed learns of changes.
type Mode string

// Feed modes.
const (
	// ModeAuto detects the mode the server supports (New, Detect).
	ModeAuto Mode = "auto"
	// ModeOplog tails local.oplog.rs with one tailable cursor per feed.
	ModeOplog Mode = "oplog"
	// ModeChangeStream opens a change stream per subscription.
	ModeChangeStream Mode = "changestream"
)

// Position is a place in a change feed: a subscription from it delivers
// every change after it. Oplog positions are oplog timestamps (plus, inside
// a transaction's applyOps entry, the index of the operation within it);
// change-stream positions are resume tokens. The zero Position means "no
// position" (now, where a starting point is asked for). Positions are
// values; String and ParsePosition convert them to and from opaque strings
// that name their mode ("o:…" and "c:…").
type Position struct {
	mode  Mode
	ts    bson.Timestamp
	sub   uint32 // oplog: 0 = the whole entry at ts; k = its first k operations
	token string // change stream: the resume token's BSON bytes
}

// OplogPosition returns the oplog position just after the entry with
// timestamp ts. The zero timestamp is the position before the first entry
// ever written.
func OplogPosition(ts bson.Timestamp) Position { return Position{mode: ModeOplog, ts: ts} }

// TokenPosition returns the change-stream position of a resume token.
func TokenPosition(token bson.Raw) Position {
	return Position{mode: ModeChangeStream, token: string(token)}
}

// IsZero reports whether p is the zero Position (no position).
func (p Position) IsZero() bool { return p.mode == "" }

// Mode returns the mode of the feed p belongs to; empty for the zero
// Position.
func (p Position) Mode() Mode { return p.mode }

// Timestamp returns an oplog position's timestamp.
func (p Position) Timestamp() bson.Timestamp { return p.ts }

// ResumeToken returns a change-stream position's resume token.
func (p Position) ResumeToken() bson.Raw {
	if p.token == "" {
		return nil
	}
	return bson.Raw(p.token)
}

// String returns p in the form ParsePosition reads: "o:<t>.<i>" (with
// ".<k>" inside an applyOps entry) or "c:<base64url resume token>"; the
// zero Position is "".
func (p Position) String() string {
	switch p.mode {
	case ModeOplog:
		b := make([]byte, 0, 32)
		b = append(b, "o:"...)
		b = strconv.AppendUint(b, uint64(p.ts.T), 10)
		b = append(b, '.')
		b = strconv.AppendUint(b, uint64(p.ts.I), 10)
		if p.sub != 0 {
			b = append(b, '.')
			b = strconv.AppendUint(b, uint64(p.sub), 10)
		}
		return string(b)
	case ModeChangeStream:
		return "c:" + base64.RawURLEncoding.EncodeToString([]byte(p.token))
	}
	return ""
}

// ParsePosition parses a String result. Anything else is
// errs.InvalidArgument on field "revision".
func ParsePosition(s string) (Position, error) {
	switch {
	case strings.HasPrefix(s, "o:"):
		parts := strings.Split(s[2:], ".")
		if len(parts) != 2 && len(parts) != 3 {
			return Position{}, badPosition(s)
		}
		var n [3]uint32
		for i, part := range parts {
			v, ok := parseUint32(part)
			if !ok {
				return Position{}, badPosition(s)
			}
			n[i] = v
		}
		if len(parts) == 3 && n[2] == 0 {
			return Position{}, badPosition(s) // String never writes ".0"
		}
		return Position{mode: ModeOplog, ts: bson.Timestamp{T: n[0], I: n[1]}, sub: n[2]}, nil
	case strings.HasPrefix(s, "c:"):
		tok, err := base64.RawURLEncoding.DecodeString(s[2:])
		if err != nil || len(tok) < 5 || bson.Raw(tok).Validate() != nil {
			return Position{}, badPosition(s)
		}
		return Position{mode: ModeChangeStream, token: string(tok)}, nil
	}
	return Position{}, badPosition(s)
}

// parseUint32 parses a canonical decimal: digits only, no sign, no leading
// zeros.
func parseUint32(s string) (uint32, bool) {
	if s == "" || len(s) > 10 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 10, 32)
	return uint32(v), err == nil
}

func badPosition(s string) error {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return errs.Invalid("revision", "%q is not a change feed position", s)
}

// Compare orders two oplog positions: -1, 0 or +1. Positions of other
// modes, or of different modes, are not ordered: ok is false.
func (p Position) Compare(q Position) (c int, ok bool) {
	if p.mode != ModeOplog || q.mode != ModeOplog {
		return 0, false
	}
	return compareOplog(p, q), true
}

func compareOplog(p, q Position) int {
	if c := compareTS(p.ts, q.ts); c != 0 {
		return c
	}
	return compareSub(p.sub, q.sub)
}

// compareSub orders positions within one entry: sub 0 is the whole entry,
// after every k.
func compareSub(a, b uint32) int {
	if a == b {
		return 0
	}
	if a == 0 {
		return 1
	}
	if b == 0 {
		return -1
	}
	if a < b {
		return -1
	}
	return 1
}

func compareTS(a, b bson.Timestamp) int {
	switch {
	case a.T < b.T:
		return -1
	case a.T > b.T:
		return 1
	case a.I < b.I:
		return -1
	case a.I > b.I:
		return 1
	}
	return 0
}
