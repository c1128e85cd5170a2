// Package embedded runs a MongoDB-wire server inside the process: FerretDB
// (the embeddable github.com/FerretDB/FerretDB/ferretdb package, SQLite
// backend, one file per database in a data directory) listening on a private
// unix socket, and in front of it, on the public TCP address, a small
// wire-protocol front that makes it safe for compare-and-swap writes.
//
// FerretDB's conditional writes are not atomic: update and findAndModify
// read the matching documents and write them back in a separate step, so
// concurrent compare-and-swap writers on one document all "succeed". The
// front therefore reads each client message whole, lets reads (find,
// getMore, aggregate without $out/$merge, count, handshakes, ...) through
// concurrently and runs every other command one at a time under a global
// write lock, held only while the backend processes the command, never
// while talking to a client. SQLite admits one writer anyway.
//
// On start the server creates local.oplog.rs as a capped collection, so
// FerretDB records every insert, update and delete there and a tailable
// cursor on it serves as a change feed; it also trims capped collections
// periodically, which FerretDB's embedded mode does not do by itself.
//
// FerretDB serves an awaitData getMore by re-reading the whole collection
// every 10 ms, and a maxTimeMS that ends during such a read moves the
// cursor back. The front therefore serves those waits itself: the backend
// cursor is a plain tailable one, and a getMore reaches the backend, for one
// read, only when a write has completed since the backend last looked or
// the cursor still holds results (see tail.go). Idle tailers cost nothing.
// Tailing cursors on the oplog it serves entirely (oplogtail.go).
//
// FerretDB also reads whole collections for any filter but {_id}, so the
// front adds an SQLite index on the expression its _id lookups use
// (idindex.go), splits compare-and-swap writes into a read by _id and a
// write by _id (pinned.go), and reads documents by _id and oplog entries
// from SQLite itself, converting FerretDB's stored form to BSON (sjson.go).
// All of it rests on FerretDB 1.24's SQLite layout, which the tests check.
//
// A Server is started with Start, stopped with Stop, and restarts on the
// same data directory and port. Drivers connect to URI.
package embedded
