// Package memory is the in-process store backend: every kind is a map from
// key to object guarded by a read-write mutex, and every kind keeps a
// bounded ring of recent changes that watches read from.
//
// A store-wide counter numbers the writes. The resourceVersion of an object
// is the number of its last write, and a revision (of a List, an Event, a
// Bookmark) is a value of that counter, so a Watch continues from any
// revision still in the kind's ring. Stored objects are never modified in
// place: a write stores a fresh deep copy, so readers copy outside the lock
// and the ring holds the same immutable objects as the maps.
//
// Watches never slow writers down: each watch has its own goroutine that
// follows the ring at its own pace. A watch that falls so far behind that
// the ring overwrote changes it has not delivered gets an Expired event and
// ends; it never silently misses a change.
//
// A memory store forgets everything when the process ends. It serves
// tests, single-process deployments and benchmarks of the layers above the
// store.
package memory
