// Package loadtesttest holds what the load-testing packages' tests
// (pkg/loadtest/gun, pkg/loadtest/report) share: HTTP servers scripted at
// the level of raw connections, and slow servers that delay the response
// head, the body and the TLS handshake by known amounts, with the margins
// within which the phases a shot measures must match those delays.
package loadtesttest
