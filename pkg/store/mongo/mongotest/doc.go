// Package mongotest gives tests a MongoDB-wire server. By default a test
// binary shares one embedded server (FerretDB behind the write-serializing
// front of package embedded), started lazily on the first call in a
// temporary directory on a free loopback port; when MONGODB_URI is set,
// tests use that server instead, so the same suites run against a real
// MongoDB. Every test gets its own database from Database, dropped when the
// test ends. Tests that stop and restart a server take a dedicated one from
// NewServer.
//
// A package using the shared server calls Main from its TestMain, which
// stops the server after the tests, whether they pass or fail:
//
//	func TestMain(m *testing.M) { mongotest.Main(m) }
package mongotest
