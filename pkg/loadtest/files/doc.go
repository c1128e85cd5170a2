// Package files says where a load generator reads the files a spec names:
// ammo files, gRPC descriptor sets, TLS certificates and keys.
//
// An FS opens them by the names written in the spec. Dir resolves
// relative names against a directory and opens absolute ones as they
// are, as `capstan loadtest run` does with names relative to its config
// file. Root confines names to a directory with os.Root: a name must be
// relative and stay inside the directory, also through symbolic links,
// so that whoever writes a spec (a LoadTest resource) reads nothing else
// of the process's files.
package files
