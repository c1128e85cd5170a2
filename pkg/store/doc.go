// Package store defines Capstan's storage contract: the Store interface,
// the Scheme that maps Go types to kinds and collections, and the helpers
// every backend shares so that they enforce the same rules.
//
// The contract (DESIGN.md "Resources and the store contract"):
//   - resourceVersion is per object, a decimal number that strictly
//     increases on every write; Update and UpdateStatus compare and swap on
//     it and a stale write fails with errs.Conflict;
//   - generation starts at 1 and increases only when the spec changes;
//     Update never writes status and UpdateStatus writes nothing but status;
//   - Delete of an object with finalizers sets deletionTimestamp; the object
//     disappears when an Update removes the last finalizer;
//   - List returns an opaque revision; Watch from that revision delivers
//     every later change in order per object (it may repeat changes that the
//     list already showed: consumers drop events whose resourceVersion is not
//     newer than what they hold);
//   - objects returned to callers never share memory with stored state;
//   - bad input (invalid names, unknown kinds, wrong namespaces, oversize or
//     malformed objects) fails with errs.InvalidArgument naming the field,
//     and stores nothing.
//
// Backends live in sub-packages: memory (in process) and mongo (MongoDB and
// Mongo-wire servers); storetest is the conformance suite both pass.
package store
