// Package config is the specification of a load test: the YAML file of
// `capstan loadtest run` and the spec of a LoadTest resource are the same
// Spec, with JSON field names.
//
// Decode reads YAML (or JSON) strictly: unknown keys are errors that name
// the line and the field path ("line 12: pools[0].gun.tagret: unknown
// field"), as are values of the wrong type, and ${env:NAME} (or
// ${env:NAME:-default}) placeholders are replaced from the environment
// before parsing. Validate checks the values and names the field at fault.
// DecodeLines (and LoadLines) also return the Lines of the fields, so that
// errors found only when the engine builds the pools' guns and ammo (a
// descriptor set that does not load, an unknown gun type, a bad TLS file)
// name their line too (engine.Options.Lines).
package config
