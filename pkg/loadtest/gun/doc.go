// Package gun says how a load generator shoots.
//
// A Gun fires one ammo per Shoot and fills in the Shot's outcome. Each
// engine instance owns one gun, so a gun need not be safe for concurrent
// use; a Factory, built once per pool from its GunSpec, makes the guns and
// holds what they share (a transport, a gRPC connection).
//
// Built-in types, looked up in a Registry (no process-global state):
//
//   - http: HTTP/1.1 over a lean keep-alive client (one connection per
//     instance, no allocations per request) for http:// targets; net/http
//     for https:// (HTTP/1.1 or, with http2, HTTP/2 over TLS, verifying
//     certificates unless told not to), for h2c (HTTP/2 without TLS) and
//     when client is "std".
//   - grpc: unary calls described by server reflection or a descriptor set
//     file, with JSON payloads.
//   - scenario: several HTTP requests per ammo, with variables extracted
//     from responses and assertions on them; each step is reported as its
//     own sample.
//
// Guns fill in the phases of a shot (Shot.Connect, Send, Receive) where
// they can: the lean HTTP/1.1 gun always, from monotonic clock readings
// (no system call, no allocation); the net/http-based guns and scenario
// steps when Env.Phases asks for them, because tracing a request
// allocates; the gRPC gun never.
//
// Register adds custom guns written in Go.
package gun
