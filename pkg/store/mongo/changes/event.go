package changes

import (
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Namespace is a database and a collection. An empty Coll stands for every
// collection of DB (an Invalidate event of a dropped database).
type Namespace struct {
	// DB is the database name.
	DB string
	// Coll is the collection name.
	Coll string
}

// String returns "db.coll".
func (n Namespace) String() string { return n.DB + "." + n.Coll }

// ParseNamespace splits "db.coll" at its first dot.
func ParseNamespace(s string) (Namespace, bool) {
	db, coll, ok := strings.Cut(s, ".")
	if !ok || db == "" || coll == "" {
		return Namespace{}, false
	}
	return Namespace{DB: db, Coll: coll}, true
}

// covers reports whether an event of namespace ev concerns a subscriber of
// n.
func (n Namespace) covers(ev Namespace) bool {
	return n.DB == ev.DB && (ev.Coll == "" || n.Coll == ev.Coll)
}

// Op says what happened to a document.
type Op string

// Operations.
const (
	// OpInsert: a document was inserted; Document holds it.
	OpInsert Op = "insert"
	// OpUpdate: a document was updated; Document holds it after the update
	// when the feed knows it (see Event.Document).
	OpUpdate Op = "update"
	// OpReplace: a document was replaced; Document holds the new one.
	OpReplace Op = "replace"
	// OpDelete: a document was deleted; only ID is known.
	OpDelete Op = "delete"
	// OpInvalidate: the collection (or the whole database) was dropped or
	// renamed; a consumer must read its state again.
	OpInvalidate Op = "invalidate"
)

// Event is one change of one document.
type Event struct {
	// Namespace is where the document lives.
	Namespace Namespace
	// Op says what happened.
	Op Op
	// ID is the document's _id; empty for OpInvalidate.
	ID bson.RawValue
	// Document is the whole document after the change: always for inserts
	// and replacements; for updates when the server logs whole documents
	// (FerretDB) or when the subscription asked for lookups, in which case
	// it is the document as read after the change (possibly newer) and nil
	// when the document was gone by then. It may be shared between
	// subscribers and must not be modified.
	Document bson.Raw
	// Position is the position just after this event: a subscription from
	// it continues with the next change.
	Position Position
	// Time is the server's wall-clock time of the change, when it says.
	Time time.Time
}
