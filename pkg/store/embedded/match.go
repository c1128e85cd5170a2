package embedded

import (
	"bytes"
	"math"
	"strings"

	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
)

// verdict is what the front's matcher says of a document and a filter.
type verdict int

const (
	// unsupported: the filter uses something the matcher does not
	// implement, or the document holds an array on a filtered path; the
	// backend must judge.
	unsupported verdict = iota
	// matched: the document satisfies the filter.
	matched
	// missed: it does not.
	missed
)

// matchFilter evaluates filter against doc with MongoDB's semantics for a
// subset of the query language: top-level fields and dotted paths through
// embedded documents, each compared by equality (a plain value, including
// null and embedded documents) or by the operators $eq, $ne, $exists, $gt,
// $gte, $lt and $lte. Keys named in skip are not evaluated. Anything else
// (top-level operators such as $and, other operators, arrays on a path,
// decimals, NaN, comparisons with null) is unsupported.
func matchFilter(doc, filter bsoncore.Document, skip string) verdict {
	elems, err := filter.Elements()
	if err != nil {
		return unsupported
	}
	result := matched
	seen := make(map[string]bool, len(elems))
	for _, e := range elems {
		key := e.Key()
		if seen[key] { // which of the two counts is the server's business
			return unsupported
		}
		seen[key] = true
		if key == skip {
			continue
		}
		if strings.HasPrefix(key, "$") || key == "" {
			return unsupported
		}
		v, present, ok := lookupPath(doc, key)
		if !ok {
			return unsupported
		}
		switch matchCondition(v, present, e.Value()) {
		case unsupported:
			return unsupported
		case missed:
			result = missed // keep checking: a later unsupported part wins
		}
	}
	return result
}

// lookupPath follows a dotted path through embedded documents. present is
// false when the path ends early; ok is false when it meets an array, whose
// matching rules (any element) the matcher does not implement.
func lookupPath(doc bsoncore.Document, path string) (v bsoncore.Value, present, ok bool) {
	cur := doc
	for {
		head, rest, more := strings.Cut(path, ".")
		if head == "" {
			return v, false, false
		}
		val, err := cur.LookupErr(head)
		if err != nil {
			return v, false, true
		}
		if val.Type == bsoncore.TypeArray {
			return v, false, false
		}
		if !more {
			return val, true, true
		}
		sub, isDoc := val.DocumentOK()
		if !isDoc {
			return v, false, true // a scalar in the middle: the path is missing
		}
		cur, path = sub, rest
	}
}

// matchCondition evaluates one filter value against the document's value
// at its path.
func matchCondition(v bsoncore.Value, present bool, cond bsoncore.Value) verdict {
	if ops, isDoc := cond.DocumentOK(); isDoc {
		elems, err := ops.Elements()
		if err != nil {
			return unsupported
		}
		if len(elems) > 0 && strings.HasPrefix(elems[0].Key(), "$") {
			result := matched
			seen := make(map[string]bool, len(elems))
			for _, op := range elems {
				if seen[op.Key()] {
					return unsupported
				}
				seen[op.Key()] = true
				r := matchOperator(v, present, op.Key(), op.Value())
				if r == unsupported {
					return unsupported
				}
				if r == missed {
					result = missed
				}
			}
			return result
		}
	}
	return matchEqual(v, present, cond)
}

func matchEqual(v bsoncore.Value, present bool, want bsoncore.Value) verdict {
	if want.Type == bsoncore.TypeNull {
		// {f: null} matches a missing field and a null one.
		return verdictOf(!present || v.Type == bsoncore.TypeNull)
	}
	if !present {
		return missed
	}
	eq, ok := valuesEqual(v, want)
	if !ok {
		return unsupported
	}
	return verdictOf(eq)
}

func matchOperator(v bsoncore.Value, present bool, op string, arg bsoncore.Value) verdict {
	switch op {
	case "$eq":
		return matchEqual(v, present, arg)
	case "$ne":
		switch matchEqual(v, present, arg) {
		case matched:
			return missed
		case missed:
			return matched
		}
		return unsupported
	case "$exists":
		want, ok := truthy(arg)
		if !ok {
			return unsupported
		}
		return verdictOf(present == want)
	case "$gt", "$gte", "$lt", "$lte":
		switch arg.Type {
		case bsoncore.TypeNull, bsoncore.TypeMinKey, bsoncore.TypeMaxKey, bsoncore.TypeEmbeddedDocument, bsoncore.TypeArray:
			return unsupported
		}
		if !present {
			return missed
		}
		c, comparable, ok := compareValues(v, arg)
		if !ok {
			return unsupported
		}
		if !comparable { // different types never compare
			return missed
		}
		switch op {
		case "$gt":
			return verdictOf(c > 0)
		case "$gte":
			return verdictOf(c >= 0)
		case "$lt":
			return verdictOf(c < 0)
		default:
			return verdictOf(c <= 0)
		}
	}
	return unsupported
}

func verdictOf(b bool) verdict {
	if b {
		return matched
	}
	return missed
}

// truthy is $exists's reading of its argument.
func truthy(v bsoncore.Value) (bool, bool) {
	switch v.Type {
	case bsoncore.TypeBoolean:
		return v.Boolean(), true
	case bsoncore.TypeInt32, bsoncore.TypeInt64, bsoncore.TypeDouble:
		f, ok := number(v)
		return f != 0, ok
	}
	return false, false
}

// number returns a numeric value as float64; ok is false for non-numbers,
// NaN, and int64 values a float64 cannot hold exactly.
func number(v bsoncore.Value) (float64, bool) {
	switch v.Type {
	case bsoncore.TypeInt32:
		return float64(v.Int32()), true
	case bsoncore.TypeInt64:
		n := v.Int64()
		if n > 1<<53 || n < -(1<<53) {
			return 0, false
		}
		return float64(n), true
	case bsoncore.TypeDouble:
		f := v.Double()
		return f, !math.IsNaN(f)
	}
	return 0, false
}

func isNumber(t bsoncore.Type) bool {
	return t == bsoncore.TypeInt32 || t == bsoncore.TypeInt64 || t == bsoncore.TypeDouble
}

// valuesEqual is BSON equality: numbers by value across their types,
// embedded documents field by field in order, arrays element by element,
// everything else by type and bytes. ok is false for values the matcher
// does not compare (decimals, NaN, large int64 against doubles, and types
// whose equality depends on more than bytes).
func valuesEqual(a, b bsoncore.Value) (eq, ok bool) {
	if isNumber(a.Type) && isNumber(b.Type) {
		if a.Type != bsoncore.TypeDouble && b.Type != bsoncore.TypeDouble {
			return intOf(a) == intOf(b), true
		}
		fa, okA := number(a)
		fb, okB := number(b)
		if !okA || !okB {
			return false, false
		}
		return fa == fb, true
	}
	if a.Type != b.Type {
		if !plainType(a.Type) || !plainType(b.Type) {
			return false, false
		}
		return false, true
	}
	switch a.Type {
	case bsoncore.TypeEmbeddedDocument, bsoncore.TypeArray:
		ae, errA := bsoncore.Document(a.Data).Elements()
		be, errB := bsoncore.Document(b.Data).Elements()
		if errA != nil || errB != nil {
			return false, false
		}
		if len(ae) != len(be) {
			return false, true
		}
		for i := range ae {
			if ae[i].Key() != be[i].Key() {
				return false, true
			}
			eq, ok := valuesEqual(ae[i].Value(), be[i].Value())
			if !ok || !eq {
				return false, ok
			}
		}
		return true, true
	}
	if !plainType(a.Type) {
		return false, false
	}
	return bytes.Equal(a.Data, b.Data), true
}

func intOf(v bsoncore.Value) int64 {
	if v.Type == bsoncore.TypeInt32 {
		return int64(v.Int32())
	}
	return v.Int64()
}

// plainType reports types whose equality is their bytes.
func plainType(t bsoncore.Type) bool {
	switch t {
	case bsoncore.TypeString, bsoncore.TypeBoolean, bsoncore.TypeDateTime, bsoncore.TypeObjectID,
		bsoncore.TypeTimestamp, bsoncore.TypeNull, bsoncore.TypeInt32, bsoncore.TypeInt64, bsoncore.TypeDouble,
		bsoncore.TypeEmbeddedDocument, bsoncore.TypeArray:
		return true
	}
	return false
}

// compareValues orders two values of the same type class (numbers,
// strings, dates, timestamps, booleans, object ids). comparable is false
// for values of different classes, which a comparison operator never
// matches; ok is false for what the matcher does not order.
func compareValues(a, b bsoncore.Value) (c int, comparable, ok bool) {
	if isNumber(a.Type) && isNumber(b.Type) {
		if a.Type != bsoncore.TypeDouble && b.Type != bsoncore.TypeDouble {
			x, y := intOf(a), intOf(b)
			return cmp3(x < y, x > y), true, true
		}
		x, okA := number(a)
		y, okB := number(b)
		if !okA || !okB {
			return 0, false, false
		}
		return cmp3(x < y, x > y), true, true
	}
	if !plainType(a.Type) || !plainType(b.Type) {
		return 0, false, false
	}
	if a.Type != b.Type {
		return 0, false, true
	}
	switch a.Type {
	case bsoncore.TypeString:
		return strings.Compare(a.StringValue(), b.StringValue()), true, true
	case bsoncore.TypeDateTime:
		x, y := a.DateTime(), b.DateTime()
		return cmp3(x < y, x > y), true, true
	case bsoncore.TypeTimestamp:
		at, ai := a.Timestamp()
		bt, bi := b.Timestamp()
		return cmp3(at < bt || (at == bt && ai < bi), at > bt || (at == bt && ai > bi)), true, true
	case bsoncore.TypeBoolean:
		x, y := a.Boolean(), b.Boolean()
		return cmp3(!x && y, x && !y), true, true
	case bsoncore.TypeObjectID:
		return bytes.Compare(a.Data, b.Data), true, true
	}
	return 0, false, false // documents and arrays: not ordered here
}

func cmp3(less, greater bool) int {
	switch {
	case less:
		return -1
	case greater:
		return 1
	}
	return 0
}

// idEquality returns the _id value of a filter when it pins _id by plain
// equality to a string or ObjectID (what FerretDB pushes down to SQLite).
func idEquality(filter bsoncore.Document) (bsoncore.Value, bool) {
	v, err := filter.LookupErr("_id")
	if err != nil {
		return bsoncore.Value{}, false
	}
	switch v.Type {
	case bsoncore.TypeString, bsoncore.TypeObjectID:
		return v, true
	}
	return bsoncore.Value{}, false
}

// idFilter returns {_id: id}.
func idFilter(id bsoncore.Value) bsoncore.Document {
	return bsoncore.NewDocumentBuilder().AppendValue("_id", id).Build()
}
