// Package store defines Capstan's storage contract: the Store interface,
// the Scheme that maps Go types to kinds and collections, and the helpers
// every backend shares so that they enforce the same rules.
//
// The contract (DESIGN.md "Resources and the store contract"), which the
// storetest conformance suite checks on every backend:
//
//   - resourceVersion is a decimal string that strictly increases per object
//     on every write (the memory backend uses a store-wide counter, the
//     Mongo backend a per-object one). Update and UpdateStatus with a
//     resourceVersion are compare-and-swap: a stale version fails with
//     errs.Conflict on field metadata.resourceVersion, a missing object
//     with errs.NotFound. An empty resourceVersion writes unconditionally.
//     Every successful write, even one that changes nothing, gets a new
//     resourceVersion.
//   - generation starts at 1 and increases only when the spec changes.
//     Update never writes status; UpdateStatus writes nothing but status.
//     Kind.MergeUpdate and Kind.MergeStatus compute what they store.
//   - Delete of an object without finalizers removes it (a Deleted event).
//     With finalizers it sets deletionTimestamp (a Modified event); the
//     Update that removes the last finalizer removes the object (a Deleted
//     event). Adding a finalizer to an object being deleted fails with
//     errs.FailedPrecondition. Deleting an object already being deleted
//     returns its state and changes nothing. Preconditions (uid,
//     resourceVersion) that do not hold fail with errs.Conflict.
//   - List is ordered by namespace, then name. Limit and Continue page
//     through in that order; every page carries the first page's Revision;
//     an object present during the whole paging appears exactly once. A
//     malformed continue token is errs.InvalidArgument on field "continue".
//   - Watch from a List's revision delivers every change after the list; it
//     may repeat changes the list already showed, so consumers drop events
//     whose resourceVersion is not newer than the one they hold for the
//     same uid. Watch from an Event's Revision continues with exactly the
//     next change: no gap, no duplicate. Events of one object arrive in
//     order. A revision older than the retained history gives one Expired
//     event, then the channel closes; a malformed revision is
//     errs.InvalidArgument from Watch itself. Bookmarks arrive periodically
//     when asked for.
//   - A Deleted event carries the object's last state when the backend
//     knows it (memory); a backend that only learns the key (the MongoDB
//     oplog) sends an object with kind, namespace and name, and consumers
//     take the last state from their own cache.
//   - Objects returned to callers never share memory with stored state, and
//     a caller mutating an object after passing it to a write does not
//     change what was stored.
//   - Bad input (invalid names or labels, unknown kinds, a namespaced kind
//     without a namespace or a cluster-scoped one with one, oversize or
//     malformed objects) fails with errs.InvalidArgument naming the field
//     (errs.FieldOf), and stores nothing.
//   - Timestamps are UTC with millisecond precision (meta.Now).
//
// Backends live in sub-packages: memory (in process) and mongo (MongoDB and
// Mongo-wire servers); storetest is the conformance suite both pass.
package store
