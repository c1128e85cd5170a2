// Package source turns a store's changes into events for controllers.
//
// An Informer lists a kind, then watches it from the list's revision into a
// thread-safe, indexed cache, and calls its event handlers with the old and
// new state of every change. It is level-triggered like client-go's: a
// watch position that expired ends in a relist whose differences are
// delivered as ordinary events (a deleted object is reported once, an
// object that is still there is never reported deleted, one deleted and
// created again under the same key is a delete and an add), and a watch that
// fails is resumed from its last revision with backoff. Events whose
// resourceVersion is not newer than the cached object's are dropped, so a
// watch that repeats what the list already showed delivers nothing twice.
//
// Cache holds one informer per kind and is a store.Reader over them: Get and
// List read memory and return deep copies, and reading a kind that nobody
// started an informer for is an error rather than a silent empty answer.
//
// Sources feed a controller's work queue: Kind (an informer's events through
// predicates and a handler), Channel (generic events from a Go channel) and
// Periodic (every object of a kind, or fixed keys, on a timer).
package source
