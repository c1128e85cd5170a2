// Package changes is a change feed over MongoDB collections that knows
// nothing of what the documents mean: subscribers name collections and a
// position, and receive raw events {namespace, op, _id, full document when
// known, position}. Positions serialize to opaque strings (Position.String,
// ParsePosition) that name their mode, so a position of one mode is never
// mistaken for the other.
//
// Two implementations share the Feed interface:
//
//   - OplogFeed tails local.oplog.rs with a single tailable cursor per
//     feed (per client), shared by every subscription. The tailer reads
//     {ts: {$gte: last}} so that the first batch holds the entry it last
//     read: that proves the position is still in the capped oplog (else
//     every subscription expires and the tailer moves to the newest
//     entry), and it keeps the cursor alive on FerretDB, where a tailable
//     cursor whose first batch is short dies at once. A dead or failed
//     cursor (an exhausted capped collection, a server restart) is
//     reopened from the last entry, with backoff, so subscriptions see no
//     gap across a restart; an awaitData cursor that brings nothing for
//     ReopenInterval is reopened too. Positions are oplog timestamps;
//     inside an applyOps entry (a transaction) they also count the
//     operations. A subscription from an older position than the tailer's
//     is served from the tailer's in-memory history of recent entries, or
//     else by reading the oplog from that position up to the tailer's,
//     before the live events queued meanwhile; a position no longer in the
//     oplog (older than its oldest entry) is expired. Update entries of
//     real MongoDB hold diffs: with LookupUpdates the subscription reads
//     the document by _id; FerretDB logs whole documents ({$v: 1, $set:
//     doc}), which are used as they are. The tailer starts with the first
//     subscription and stops after IdleTimeout without any.
//
//     FerretDB serves no oplog query from an index: every read of the
//     oplog reads all of it, about 0.1 ms per entry. So Current answers
//     without a query while the tailer runs (its position: everything
//     after it is still to come) and otherwise reuses a position learned
//     within CurrentMaxAge while the oplog holds it (checked against the
//     oldest entry, which is cheap); Latest, which must exclude earlier
//     writes, reads the newest entry. Capstan's embedded server answers
//     awaitData getMores itself and wakes them on writes; against FerretDB
//     reached directly, set PollInterval to poll with a plain tailable
//     cursor instead. The oplog on an empty server has no position yet:
//     Current then returns the zero timestamp and starts the tailer, which
//     sees every entry from the first; that position is honoured while the
//     first entry is still in the oplog. Multi-entry transactions
//     (partialTxn) are reported as their entries appear, not at commit.
//
//   - ChangeStreamFeed opens a change stream per subscription, with resume
//     tokens as positions, startAfter to continue after an invalidate and
//     ChangeStreamHistoryLost reported as expiry.
//
// Each subscription has a bounded queue (Options.Buffer): the tailer never
// waits for a subscriber, and a subscriber that falls further behind than
// its queue expires (IsExpired), as does one whose position left the log;
// it must then read its state again and subscribe from a new position.
// Drops and renames of a watched collection arrive as OpInvalidate.
//
// New with ModeAuto picks change streams when the server opens one and the
// oplog otherwise (FerretDB, which has no change streams but keeps an
// oplog on Capstan's embedded server).
package changes
