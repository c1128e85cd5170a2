package changes

import (
	"fmt"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// The oplog's namespace.
const (
	oplogDB   = "local"
	oplogColl = "oplog.rs"
)

// entry is one parsed oplog entry: its timestamp and the events it holds
// (none for no-ops and commands that change no documents).
type entry struct {
	ts     bson.Timestamp
	events []Event
	size   int // bytes of the raw entry, for the history bound
}

// parseEntry parses an oplog entry. raw must not be modified afterwards:
// events keep slices of it. An entry whose operations cannot be parsed is
// returned with its timestamp and no events, and an error.
//
// Shapes handled (MongoDB 4.x–8.x and FerretDB):
//
//	{op: "i", ns, o: doc}
//	{op: "u", ns, o2: {_id}, o: {$v: 2, diff: {...}}}       MongoDB ≥ 5: a diff
//	{op: "u", ns, o2: {_id}, o: {$set: {...}, $unset: ...}}  MongoDB < 5: operators
//	{op: "u", ns, o2: {_id}, o: {$v: 1, $set: doc with _id}} FerretDB: the whole document
//	{op: "u", ns, o2: {_id}, o: doc without $ fields}        a replacement
//	{op: "d", ns, o: {_id}}
//	{op: "c", ns: "db.$cmd", o: {applyOps: [entries]}}       transactions
//	{op: "c", ns: "db.$cmd", o: {drop | dropDatabase | renameCollection}}
//	{op: "n"}                                                no-op
func parseEntry(raw bson.Raw) (entry, error) {
	tsv, err := raw.LookupErr("ts")
	if err != nil {
		return entry{}, fmt.Errorf("oplog entry without ts: %v", err)
	}
	t, i, ok := tsv.TimestampOK()
	if !ok {
		return entry{}, fmt.Errorf("oplog entry ts is %s, not a timestamp", tsv.Type)
	}
	e := entry{ts: bson.Timestamp{T: t, I: i}, size: len(raw)}
	var when time.Time
	if v, err := raw.LookupErr("wall"); err == nil {
		if dt, ok := v.DateTimeOK(); ok {
			when = time.UnixMilli(dt).UTC()
		}
	}
	evs, err := parseOps(raw, when, 0)
	if err != nil {
		// The position still moves past it.
		return e, fmt.Errorf("oplog entry %d.%d: %w", t, i, err)
	}
	e.events = evs
	if n := len(e.events); n > 1 {
		// Operations of one applyOps entry share its timestamp; each event's
		// position counts the operations up to it, the last one is the
		// whole entry.
		for k := range e.events {
			e.events[k].Position = Position{mode: ModeOplog, ts: e.ts, sub: uint32(k + 1)}
		}
		e.events[n-1].Position.sub = 0
	} else if n == 1 {
		e.events[0].Position = OplogPosition(e.ts)
	}
	return e, nil
}

// parseOps returns the events of one operation (recursing into applyOps).
func parseOps(raw bson.Raw, when time.Time, depth int) ([]Event, error) {
	op, _ := raw.Lookup("op").StringValueOK()
	nsStr, _ := raw.Lookup("ns").StringValueOK()
	switch op {
	case "n", "":
		return nil, nil
	case "c":
		return parseCommand(raw, nsStr, when, depth)
	}
	ns, ok := ParseNamespace(nsStr)
	if !ok {
		return nil, fmt.Errorf("op %q has namespace %q", op, nsStr)
	}
	o, ok := raw.Lookup("o").DocumentOK()
	if !ok {
		return nil, fmt.Errorf("op %q has no o document", op)
	}
	ev := Event{Namespace: ns, Time: when}
	switch op {
	case "i":
		ev.Op = OpInsert
		ev.Document = o
		id, err := o.LookupErr("_id")
		if err != nil {
			return nil, fmt.Errorf("insert without _id")
		}
		ev.ID = id
	case "d":
		ev.Op = OpDelete
		id, err := o.LookupErr("_id")
		if err != nil {
			return nil, fmt.Errorf("delete without _id")
		}
		ev.ID = id
	case "u":
		o2, ok := raw.Lookup("o2").DocumentOK()
		if !ok {
			return nil, fmt.Errorf("update without o2")
		}
		id, err := o2.LookupErr("_id")
		if err != nil {
			return nil, fmt.Errorf("update without o2._id")
		}
		ev.ID = id
		ev.Op, ev.Document = parseUpdate(o, id)
	default:
		return nil, fmt.Errorf("unknown op %q", op)
	}
	return []Event{ev}, nil
}

// parseUpdate tells a replacement from an update and finds the whole
// document when the entry holds it.
func parseUpdate(o bson.Raw, id bson.RawValue) (Op, bson.Raw) {
	elems, err := o.Elements()
	if err != nil {
		return OpUpdate, nil
	}
	operators := false
	for _, el := range elems {
		if strings.HasPrefix(el.Key(), "$") || el.Key() == "diff" {
			operators = true
			break
		}
	}
	if !operators {
		return OpReplace, o
	}
	// FerretDB logs {$v: 1, $set: <the whole document>}; MongoDB never
	// $sets _id, so a $set holding the document's _id is the document.
	if set, ok := o.Lookup("$set").DocumentOK(); ok {
		if sid, err := set.LookupErr("_id"); err == nil && sid.Equal(id) {
			return OpUpdate, set
		}
	}
	return OpUpdate, nil
}

// parseCommand returns the events of a command entry: the operations of
// applyOps, and Invalidate for drops and renames.
func parseCommand(raw bson.Raw, nsStr string, when time.Time, depth int) ([]Event, error) {
	db, _, _ := strings.Cut(nsStr, ".")
	o, ok := raw.Lookup("o").DocumentOK()
	if !ok {
		return nil, nil
	}
	elems, err := o.Elements()
	if err != nil || len(elems) == 0 {
		return nil, nil
	}
	first := elems[0]
	switch first.Key() {
	case "applyOps":
		if depth > 4 {
			return nil, fmt.Errorf("applyOps nested too deep")
		}
		arr, ok := first.Value().ArrayOK()
		if !ok {
			return nil, fmt.Errorf("applyOps is not an array")
		}
		vals, err := arr.Values()
		if err != nil {
			return nil, err
		}
		var out []Event
		for _, v := range vals {
			sub, ok := v.DocumentOK()
			if !ok {
				continue
			}
			evs, err := parseOps(sub, when, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, evs...)
		}
		return out, nil
	case "drop":
		coll, _ := first.Value().StringValueOK()
		return []Event{{Namespace: Namespace{DB: db, Coll: coll}, Op: OpInvalidate, Time: when}}, nil
	case "dropDatabase":
		return []Event{{Namespace: Namespace{DB: db}, Op: OpInvalidate, Time: when}}, nil
	case "renameCollection":
		var out []Event
		if from, ok := first.Value().StringValueOK(); ok {
			if ns, ok := ParseNamespace(from); ok {
				out = append(out, Event{Namespace: ns, Op: OpInvalidate, Time: when})
			}
		}
		if to, ok := o.Lookup("to").StringValueOK(); ok {
			if ns, ok := ParseNamespace(to); ok {
				out = append(out, Event{Namespace: ns, Op: OpInvalidate, Time: when})
			}
		}
		return out, nil
	}
	return nil, nil
}
