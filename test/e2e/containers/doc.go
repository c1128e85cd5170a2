// Package containers runs the coordination end-to-end scenarios
// (test/e2e/scenarios) in containers: two images built here FROM scratch
// (`capstan run` serving its embedded store, and the test operator), both
// static binaries, so nothing is pulled; testcontainers-go starts them on
// a private network, and the scenarios kill, pause and disconnect the
// replica containers through the Docker engine. Without a Docker engine
// the suite skips and says why; `go test -short` skips it too.
package containers
