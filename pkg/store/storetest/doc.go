// Package storetest is the conformance suite of the store contract (see
// package store): every backend runs it from its own tests,
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Harness{
//			New: func(t *testing.T, s *store.Scheme) store.Store { return memory.New(s) },
//		})
//	}
//
// and passes. The suite registers its own kinds (Widget, namespaced and
// typed; Gizmo, cluster-scoped and typed; Doodad, known only as
// *meta.Unstructured) in a fresh scheme for every subtest and asks the
// harness for an empty store over it. Subtests are named by behaviour
// ("Update/ConcurrentCASExactlyOneWins"), so `go test -run` selects them.
//
// The suite assumes nothing about timing beyond Harness.EventTimeout for
// one watch event, treats revisions and continue tokens as opaque, compares
// resourceVersions only between writes of one object, and expects a global
// order of events only where the contract promises one (a watch resumed
// from an event's revision).
package storetest
