// Package mongo is the store.Store on MongoDB and Mongo-wire servers
// (FerretDB on Capstan's embedded server), through
// go.mongodb.org/mongo-driver/v2. New wraps a client the caller owns; Open
// connects and owns it. The layers below it do not know about resources
// and serve other uses of existing collections: mongox (connection
// options, error mapping, indexes) and changes (the change feed).
//
// # Documents
//
// Each kind has its own collection (Kind.Collection) in Options.Database.
// A document is the object's JSON form, so that it reads like the YAML a
// user applied:
//
//	{_id: "namespace/name" (or "name"), metadata: {...}, spec: {...},
//	 status: {...}, <other top-level fields>,
//	 _capstan: {spec: <hash>, status: <hash>, rest: <bytes>}}
//
// Objects go through encoding/json (their JSON tags, MarshalJSON methods,
// omitempty and omitzero decide the shape), and the JSON becomes BSON with
// object keys sorted, so a typed object and an unstructured one with the
// same JSON are stored as identical documents and read back alike. JSON
// integers that fit are int64, other numbers double. Timestamps as Go
// writes them (UTC, at most millisecond precision, which is how the store
// and meta.Now make them) are BSON dates; other strings stay strings, and
// reading turns dates back into the same strings, so nothing changes on
// the way. Keys servers refuse are escaped: '%' → %25, '.' → %2E, NUL →
// %00, a leading '$' → %24, "" → %; so label keys like
// app.kubernetes.io/name are stored as app%2Ekubernetes%2Eio/name, which
// also lets queries address them. An unstructured object's kind is not
// stored (the collection is the kind); its apiVersion is, when set.
// _capstan is the store's: a hash of the spec (the generation rule), a
// hash of the status (Update's check that it leaves the status alone) and
// the JSON size without the status (UpdateStatus' size check). Indexes:
// metadata.uid (unique), metadata.namespace + metadata.name (List's order)
// and, on MongoDB, a wildcard index on metadata.labels. (FerretDB 1.24
// uses its _id index only for a filter that names nothing but _id, and
// for finds, whose dotted paths it checks afterwards; its conditional
// update, findAndModify and delete read the collection up to the first
// match, for this store and for any other client alike.)
//
// # Writes
//
// resourceVersion is per object: "1" on Create, +1 on every write, stored
// as the decimal string metadata.resourceVersion. Every write is one
// conditional command on the common path and needs no transaction:
//
//   - Create is an insert; a duplicate _id is errs.AlreadyExists.
//   - Update replaces the document with a filter that pins the stored
//     resourceVersion, uid, generation, creation time, the absence of a
//     deletion mark, the status (by hash) and whether the spec changed (by
//     hash; the store remembers the spec hash of versions it has read or
//     written, so it knows which generation to write). When the filter
//     misses, a read tells NotFound from Conflict, and anything else (a
//     client that changed store-owned fields or the status, an object
//     being deleted, an unconditional write) is done by Kind.MergeUpdate
//     and a compare-and-swap on the version read.
//   - UpdateStatus is one findAndModify that sets the status and the next
//     version where the version matches and the result stays within
//     store.MaxObjectBytes, else read, Kind.MergeStatus and
//     compare-and-swap.
//   - Delete of an object without finalizers is one findAndModify (with
//     the preconditions in its filter); otherwise read, check and mark
//     with deletionTimestamp by compare-and-swap. The Update that removes
//     the last finalizer of an object being deleted deletes it.
//
// Compare-and-swap relies on the server applying a conditional write
// atomically; the embedded server serializes writes to make FerretDB do
// so. Errors carry errs codes (mongox.Err): duplicate key AlreadyExists,
// a missed compare-and-swap Conflict or NotFound, network failures
// Unavailable, timeouts DeadlineExceeded. Operations whose context has no
// deadline are bounded by Options.Timeout.
//
// # Revisions and Watch
//
// Revisions are change-feed positions (package changes): oplog timestamps
// ("o:…") or change-stream resume tokens ("c:…"); a revision of the other
// mode or a malformed one is errs.InvalidArgument. List's revision is a
// feed position taken before its query (changes.Feed.Current: the
// tailer's position, or one learned within a minute, so that a List does
// not read the whole oplog on FerretDB), so a watch from it may repeat
// changes the list showed but misses none. Watch from no revision starts
// at the newest entry (changes.Feed.Latest). Watch subscribes to the kind's
// collection: in oplog mode all watches of a store share one tailable
// cursor; in change-stream mode each watch has its own stream. Update
// events whose log entry holds only a diff (real MongoDB) are completed
// by reading the document, so they may show a newer state than the change
// itself (consumers drop events that are not newer than what they hold);
// FerretDB logs whole documents. Deleted events carry kind, namespace and
// name only. A dropped or renamed collection, a revision the log no
// longer holds, or a watch that falls further behind than its buffer
// (Options.Changes.Buffer) ends with one Expired event. Bookmarks carry
// the feed's position at most Options.BookmarkInterval apart.
//
// WatchAuto picks change streams when the server opens one (a replica set
// or sharded cluster) and the oplog otherwise. Change-stream mode cannot
// run against FerretDB; its tests run only when MONGODB_URI names a
// replica set.
package mongo
