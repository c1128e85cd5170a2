package mongo

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
)

// This file converts between JSON and BSON the way the store stores
// documents (see the package doc, "Documents"):
//
//   - Object keys are sorted, so that a typed object and an unstructured one
//     with the same JSON have byte-identical documents.
//   - Keys MongoDB-wire servers refuse are escaped: '%' → %25, '.' → %2E,
//     NUL → %00, a leading '$' → %24, and the empty key → "%".
//   - Integers that fit int64 become int64, other numbers double.
//   - A string that is a UTC timestamp with at most millisecond precision,
//     written exactly as Go writes time.Time in JSON (RFC 3339 with the
//     fraction's trailing zeros dropped), becomes a BSON date; every other
//     string stays a string. Reading back turns dates into that same
//     string, so either way the JSON read equals the JSON written.

// appendJSONValue appends v, a value decoded from JSON with UseNumber, as
// the BSON element key of dst.
func appendJSONValue(dst []byte, key string, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return bsoncore.AppendNullElement(dst, key), nil
	case bool:
		return bsoncore.AppendBooleanElement(dst, key, x), nil
	case string:
		if ms, ok := canonicalTime(x); ok {
			return bsoncore.AppendDateTimeElement(dst, key, ms), nil
		}
		return bsoncore.AppendStringElement(dst, key, x), nil
	case json.Number:
		s := string(x)
		if !strings.ContainsAny(s, ".eE") {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				return bsoncore.AppendInt64Element(dst, key, n), nil
			}
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil && !isRangeErr(err) {
			return nil, fmt.Errorf("number %q: %v", s, err)
		}
		if math.IsInf(f, 0) {
			return nil, fmt.Errorf("number %q is out of range", s)
		}
		return bsoncore.AppendDoubleElement(dst, key, f), nil
	case []any:
		idx, out := bsoncore.AppendArrayElementStart(dst, key)
		var buf [20]byte
		var err error
		for i, e := range x {
			if out, err = appendJSONValue(out, string(strconv.AppendInt(buf[:0], int64(i), 10)), e); err != nil {
				return nil, err
			}
		}
		return bsoncore.AppendArrayEnd(out, idx)
	case map[string]any:
		idx, out := bsoncore.AppendDocumentElementStart(dst, key)
		out, err := appendJSONObject(out, x)
		if err != nil {
			return nil, err
		}
		return bsoncore.AppendDocumentEnd(out, idx)
	}
	return nil, fmt.Errorf("unexpected %T in decoded JSON", v)
}

// appendJSONObject appends m's members with sorted, escaped keys.
func appendJSONObject(dst []byte, m map[string]any) ([]byte, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var err error
	for _, k := range keys {
		if dst, err = appendJSONValue(dst, escapeKey(k), m[k]); err != nil {
			return nil, err
		}
	}
	return dst, nil
}

func isRangeErr(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

// canonicalTime reports whether s is a timestamp as Go writes a UTC
// time.Time with at most millisecond precision, and returns it in Unix
// milliseconds.
func canonicalTime(s string) (int64, bool) {
	// 2006-01-02T15:04:05Z … 2006-01-02T15:04:05.999Z
	if len(s) < 20 || len(s) > 24 || s[len(s)-1] != 'Z' || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return 0, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Nanosecond()%int(time.Millisecond) != 0 {
		return 0, false
	}
	var buf [32]byte
	if string(t.UTC().AppendFormat(buf[:0], time.RFC3339Nano)) != s {
		return 0, false
	}
	return t.UnixMilli(), true
}

// escapeKey makes a JSON object key acceptable to every MongoDB-wire
// server (see the file comment); unescapeKey reverses it.
func escapeKey(k string) string {
	if k == "" {
		return "%"
	}
	need := k[0] == '$'
	for i := 0; i < len(k) && !need; i++ {
		switch k[i] {
		case '%', '.', 0:
			need = true
		}
	}
	if !need {
		return k
	}
	var b strings.Builder
	b.Grow(len(k) + 8)
	for i := 0; i < len(k); i++ {
		switch c := k[i]; {
		case c == '%':
			b.WriteString("%25")
		case c == '.':
			b.WriteString("%2E")
		case c == 0:
			b.WriteString("%00")
		case c == '$' && i == 0:
			b.WriteString("%24")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func unescapeKey(k []byte) []byte {
	if bytes.IndexByte(k, '%') < 0 {
		return k
	}
	if len(k) == 1 {
		return nil // the empty key
	}
	out := make([]byte, 0, len(k))
	for i := 0; i < len(k); i++ {
		if k[i] == '%' && i+2 < len(k) {
			if v, err := strconv.ParseUint(string(k[i+1:i+3]), 16, 8); err == nil {
				out = append(out, byte(v))
				i += 2
				continue
			}
		}
		out = append(out, k[i])
	}
	return out
}

// appendDocJSON appends the BSON document doc as a JSON object. At the
// top level (top) fields whose names start with "_" (_id and the store's
// own fields) are left out.
func appendDocJSON(dst []byte, doc []byte, top bool) ([]byte, error) {
	if len(doc) < 5 {
		return nil, fmt.Errorf("malformed BSON document")
	}
	rest := doc[4 : len(doc)-1]
	dst = append(dst, '{')
	first := true
	for len(rest) > 0 {
		el, r, ok := bsoncore.ReadElement(rest)
		if !ok {
			return nil, fmt.Errorf("malformed BSON element")
		}
		rest = r
		key := el.KeyBytes()
		if top && len(key) > 0 && key[0] == '_' {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendJSONString(dst, unescapeKey(key))
		dst = append(dst, ':')
		var err error
		if dst, err = appendValueJSON(dst, el.Value()); err != nil {
			return nil, err
		}
	}
	return append(dst, '}'), nil
}

func appendArrayJSON(dst []byte, arr []byte) ([]byte, error) {
	if len(arr) < 5 {
		return nil, fmt.Errorf("malformed BSON array")
	}
	rest := arr[4 : len(arr)-1]
	dst = append(dst, '[')
	first := true
	for len(rest) > 0 {
		el, r, ok := bsoncore.ReadElement(rest)
		if !ok {
			return nil, fmt.Errorf("malformed BSON array element")
		}
		rest = r
		if !first {
			dst = append(dst, ',')
		}
		first = false
		var err error
		if dst, err = appendValueJSON(dst, el.Value()); err != nil {
			return nil, err
		}
	}
	return append(dst, ']'), nil
}

// appendValueJSON appends one BSON value as JSON. Types JSON lacks take
// the form encoding/json gives their Go counterparts (dates as RFC 3339
// strings, binary as base64, ObjectIDs as hex); values without one
// (undefined, min/max keys, NaN) become null.
func appendValueJSON(dst []byte, v bsoncore.Value) ([]byte, error) {
	d := v.Data
	switch v.Type {
	case bsoncore.TypeString, bsoncore.TypeSymbol, bsoncore.TypeJavaScript:
		s, _, ok := bsoncore.ReadString(d)
		if !ok {
			return nil, fmt.Errorf("malformed BSON string")
		}
		return appendJSONString(dst, []byte(s)), nil
	case bsoncore.TypeInt64:
		n, _, ok := bsoncore.ReadInt64(d)
		if !ok {
			return nil, fmt.Errorf("malformed BSON int64")
		}
		return strconv.AppendInt(dst, n, 10), nil
	case bsoncore.TypeInt32:
		n, _, ok := bsoncore.ReadInt32(d)
		if !ok {
			return nil, fmt.Errorf("malformed BSON int32")
		}
		return strconv.AppendInt(dst, int64(n), 10), nil
	case bsoncore.TypeDouble:
		f, _, ok := bsoncore.ReadDouble(d)
		if !ok {
			return nil, fmt.Errorf("malformed BSON double")
		}
		return appendFloatJSON(dst, f), nil
	case bsoncore.TypeBoolean:
		b, _, ok := bsoncore.ReadBoolean(d)
		if !ok {
			return nil, fmt.Errorf("malformed BSON boolean")
		}
		return strconv.AppendBool(dst, b), nil
	case bsoncore.TypeDateTime:
		ms, _, ok := bsoncore.ReadDateTime(d)
		if !ok {
			return nil, fmt.Errorf("malformed BSON date")
		}
		dst = append(dst, '"')
		dst = time.UnixMilli(ms).UTC().AppendFormat(dst, time.RFC3339Nano)
		return append(dst, '"'), nil
	case bsoncore.TypeEmbeddedDocument:
		return appendDocJSON(dst, d, false)
	case bsoncore.TypeArray:
		return appendArrayJSON(dst, d)
	case bsoncore.TypeNull, bsoncore.TypeUndefined, bsoncore.TypeMinKey, bsoncore.TypeMaxKey, bsoncore.TypeDBPointer:
		return append(dst, "null"...), nil
	case bsoncore.TypeObjectID:
		oid, _, ok := bsoncore.ReadObjectID(d)
		if !ok {
			return nil, fmt.Errorf("malformed BSON ObjectID")
		}
		dst = append(dst, '"')
		dst = hex.AppendEncode(dst, oid[:])
		return append(dst, '"'), nil
	case bsoncore.TypeBinary:
		_, bin, _, ok := bsoncore.ReadBinary(d)
		if !ok {
			return nil, fmt.Errorf("malformed BSON binary")
		}
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, bin)
		return append(dst, '"'), nil
	case bsoncore.TypeTimestamp:
		t, i, _, ok := bsoncore.ReadTimestamp(d)
		if !ok {
			return nil, fmt.Errorf("malformed BSON timestamp")
		}
		return strconv.AppendUint(dst, uint64(t)<<32|uint64(i), 10), nil
	case bsoncore.TypeDecimal128:
		h, l, _, ok := bsoncore.ReadDecimal128(d)
		if !ok {
			return nil, fmt.Errorf("malformed BSON decimal")
		}
		s := bson.NewDecimal128(h, l).String()
		if json.Valid([]byte(s)) {
			return append(dst, s...), nil
		}
		return appendJSONString(dst, []byte(s)), nil
	case bsoncore.TypeRegex:
		p, o, _, ok := bsoncore.ReadRegex(d)
		if !ok {
			return nil, fmt.Errorf("malformed BSON regex")
		}
		return appendJSONString(dst, []byte("/"+p+"/"+o)), nil
	case bsoncore.TypeCodeWithScope:
		code, _, _, ok := bsoncore.ReadCodeWithScope(d)
		if !ok {
			return nil, fmt.Errorf("malformed BSON code")
		}
		return appendJSONString(dst, []byte(code)), nil
	}
	return nil, fmt.Errorf("unsupported BSON type %v", v.Type)
}

// appendFloatJSON formats f as encoding/json formats a float64.
func appendFloatJSON(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// Clean up e-09 to e-9, as encoding/json does.
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes
// U+FFFD, as encoding/json does.
func appendJSONString(dst []byte, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// jsonLen returns the length of encoding/json's encoding of v, a value
// decoded from JSON with UseNumber, without encoding it.
func jsonLen(v any) int {
	switch x := v.(type) {
	case nil:
		return 4
	case bool:
		if x {
			return 4
		}
		return 5
	case json.Number:
		return len(x)
	case string:
		return jsonStringLen(x)
	case []any:
		n := 2
		for i, e := range x {
			if i > 0 {
				n++
			}
			n += jsonLen(e)
		}
		return n
	case map[string]any:
		n := 2
		first := true
		for k, e := range x {
			if !first {
				n++
			}
			first = false
			n += jsonStringLen(k) + 1 + jsonLen(e)
		}
		return n
	}
	return 0
}

// jsonStringLen is the length of encoding/json's encoding of s (with its
// default HTML escaping).
func jsonStringLen(s string) int {
	n := 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f':
				n += 2
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			n += 6
		case r == '\u2028' || r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}
