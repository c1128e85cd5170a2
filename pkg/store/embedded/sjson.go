package embedded

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
)

// Reading FerretDB's stored documents without FerretDB.
//
// FerretDB 1.24 keeps each document in SQLite as "SJSON": a JSON object
// whose values are plain JSON and whose "$s" member is a schema giving the
// key order ("$k") and every value's BSON type ("p": per key, "t": the
// type; "$s" of a nested document, "i" of an array's items, "s" of a
// binary's subtype, "o" of a regular expression's options). sjsonToBSON
// turns that back into the BSON document FerretDB itself would return, so
// the front can answer a read from the row it found in SQLite instead of
// asking FerretDB to find the row again and convert it. Anything it does
// not recognize is an error: the caller then asks FerretDB.

// sjsonSchema is the "$s" member of a stored document or of a nested one.
type sjsonSchema struct {
	Props map[string]*sjsonElem `json:"p"`
	Keys  []string              `json:"$k"`
}

// sjsonElem is one value's schema.
type sjsonElem struct {
	Type    string       `json:"t"`
	Schema  *sjsonSchema `json:"$s"`
	Options *string      `json:"o"`
	Items   []*sjsonElem `json:"i"`
	Subtype *byte        `json:"s"`
}

// sjsonToBSON converts a stored document to BSON.
func sjsonToBSON(data []byte) (bsoncore.Document, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, fmt.Errorf("sjson: %w", err)
	}
	raw, ok := fields["$s"]
	if !ok {
		return nil, fmt.Errorf("sjson: no schema")
	}
	// As strict as FerretDB's reader: a schema member it does not know
	// means a document of a kind this code has not seen.
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var sch sjsonSchema
	if err := dec.Decode(&sch); err != nil {
		return nil, fmt.Errorf("sjson: schema: %w", err)
	}
	delete(fields, "$s")
	return appendSJSONDocument(make([]byte, 0, len(data)), fields, &sch)
}

// appendSJSONDocument appends the document of fields (without "$s") whose
// schema is sch.
func appendSJSONDocument(dst []byte, fields map[string]json.RawMessage, sch *sjsonSchema) ([]byte, error) {
	if len(sch.Keys) != len(fields) {
		return nil, fmt.Errorf("sjson: %d keys in the schema, %d fields", len(sch.Keys), len(fields))
	}
	idx, dst := bsoncore.AppendDocumentStart(dst)
	for _, key := range sch.Keys {
		v, ok := fields[key]
		if !ok {
			return nil, fmt.Errorf("sjson: field %q is missing", key)
		}
		var err error
		if dst, err = appendSJSONValue(dst, key, v, sch.Props[key]); err != nil {
			return nil, err
		}
	}
	return bsoncore.AppendDocumentEnd(dst, idx)
}

// appendSJSONValue appends the element key whose stored value is v and
// whose schema is el.
func appendSJSONValue(dst []byte, key string, v json.RawMessage, el *sjsonElem) ([]byte, error) {
	if string(v) == "null" {
		return bsoncore.AppendNullElement(dst, key), nil
	}
	if el == nil {
		return nil, fmt.Errorf("sjson: field %q has no schema", key)
	}
	bad := func(err error) ([]byte, error) {
		return nil, fmt.Errorf("sjson: field %q (%s): %w", key, el.Type, err)
	}
	switch el.Type {
	case "object":
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(v, &fields); err != nil {
			return bad(err)
		}
		sch := el.Schema
		if len(fields) == 0 {
			sch = &sjsonSchema{}
		} else if sch == nil {
			return bad(fmt.Errorf("no schema"))
		}
		dst = bsoncore.AppendHeader(dst, bsoncore.TypeEmbeddedDocument, key)
		return appendSJSONDocument(dst, fields, sch)
	case "array":
		var items []json.RawMessage
		if err := json.Unmarshal(v, &items); err != nil {
			return bad(err)
		}
		if len(items) != len(el.Items) {
			return bad(fmt.Errorf("%d items, %d in the schema", len(items), len(el.Items)))
		}
		var idx int32
		idx, dst = bsoncore.AppendArrayElementStart(dst, key)
		for i, it := range items {
			var err error
			if dst, err = appendSJSONValue(dst, strconv.Itoa(i), it, el.Items[i]); err != nil {
				return nil, err
			}
		}
		return bsoncore.AppendArrayEnd(dst, idx)
	case "double":
		var f float64
		if err := json.Unmarshal(v, &f); err != nil {
			return bad(err)
		}
		return bsoncore.AppendDoubleElement(dst, key, f), nil
	case "string":
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return bad(err)
		}
		return bsoncore.AppendStringElement(dst, key, s), nil
	case "binData":
		var b []byte
		if err := json.Unmarshal(v, &b); err != nil {
			return bad(err)
		}
		if el.Subtype == nil {
			return bad(fmt.Errorf("no subtype"))
		}
		// Written as stored: bsoncore would add a second length to the
		// old binary subtype (2), whose data holds its own already.
		dst = bsoncore.AppendHeader(dst, bsoncore.TypeBinary, key)
		dst = bsoncore.AppendInt32(dst, int32(len(b)))
		dst = append(dst, *el.Subtype)
		return append(dst, b...), nil
	case "objectId":
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return bad(err)
		}
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != 12 {
			return bad(fmt.Errorf("not an ObjectID: %q", s))
		}
		return bsoncore.AppendObjectIDElement(dst, key, [12]byte(b)), nil
	case "bool":
		var b bool
		if err := json.Unmarshal(v, &b); err != nil {
			return bad(err)
		}
		return bsoncore.AppendBooleanElement(dst, key, b), nil
	case "date":
		var ms int64
		if err := json.Unmarshal(v, &ms); err != nil {
			return bad(err)
		}
		return bsoncore.AppendDateTimeElement(dst, key, ms), nil
	case "regex":
		var pattern string
		if err := json.Unmarshal(v, &pattern); err != nil {
			return bad(err)
		}
		if el.Options == nil {
			return bad(fmt.Errorf("no options"))
		}
		return bsoncore.AppendRegexElement(dst, key, pattern, *el.Options), nil
	case "int":
		var i int32
		if err := json.Unmarshal(v, &i); err != nil {
			return bad(err)
		}
		return bsoncore.AppendInt32Element(dst, key, i), nil
	case "timestamp":
		var ts uint64
		if err := json.Unmarshal(v, &ts); err != nil {
			return bad(err)
		}
		return bsoncore.AppendTimestampElement(dst, key, uint32(ts>>32), uint32(ts)), nil
	case "long":
		var i int64
		if err := json.Unmarshal(v, &i); err != nil {
			return bad(err)
		}
		return bsoncore.AppendInt64Element(dst, key, i), nil
	}
	return bad(fmt.Errorf("unknown type"))
}
