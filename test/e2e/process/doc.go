// Package process runs the coordination end-to-end scenarios
// (test/e2e/scenarios) with every replica a process on this host: one
// `capstan run` serving its embedded store on a loopback port and several
// test operators, each reaching the store through its own TCP proxy so
// that a test can cut it off. It needs no Docker, so every machine that
// runs `go test ./...` checks the same safety properties as the container
// suite. `go test -short` skips it.
package process
