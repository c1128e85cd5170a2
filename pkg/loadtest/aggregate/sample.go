package aggregate

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// Class is the outcome class of a shot.
type Class uint8

// The outcome classes. Everything but OK counts as an error.
const (
	// OK is a shot that succeeded.
	OK Class = iota
	// Status is a response with a failing protocol code: HTTP 4xx/5xx or a
	// gRPC status other than OK.
	Status
	// Timeout is a shot that ran out of time.
	Timeout
	// Conn is a connection failure: refused, reset, closed early.
	Conn
	// Protocol is a malformed response.
	Protocol
	// Assertion is a scenario check that failed.
	Assertion
	// Canceled is a shot cut short by the end of the run.
	Canceled
	// Other is any other failure.
	Other
	numClasses
)

var classNames = [numClasses]string{"ok", "status", "timeout", "conn", "protocol", "assertion", "canceled", "other"}

// String returns the class's name, for example "timeout".
func (c Class) String() string {
	if c < numClasses {
		return classNames[c]
	}
	return "unknown"
}

// Proto says which protocol a sample's Code belongs to.
type Proto uint8

// The protocols.
const (
	// NoProto marks a sample without a protocol code.
	NoProto Proto = iota
	// HTTP codes are HTTP status codes.
	HTTP
	// GRPC codes are gRPC status codes.
	GRPC
)

// Sample is the record of one shot (or one step of a scenario). Times are
// nanoseconds since the start of the run on a monotonic clock.
type Sample struct {
	// Tag groups the sample in reports.
	Tag string
	// Intended is when the schedule wanted the shot fired.
	Intended int64
	// Sent is when the gun was called.
	Sent int64
	// Done is when the gun returned.
	Done int64
	// Connect, Send and Receive split the shot into pandora's phases, in
	// nanoseconds: Connect is the dial and TLS handshake when the shot
	// opened a new connection (0 on a reused one), Send the writing of the
	// request, Receive the time from the first byte of the response to its
	// last. What Done-Sent leaves over is the wait for the first byte (and
	// the gun's own work). All three are 0 when the gun does not measure
	// them.
	Connect, Send, Receive int64
	// BytesOut and BytesIn count request and response bytes.
	BytesOut, BytesIn int64
	// Code is the protocol's result code (HTTP status, gRPC code).
	Code int32
	// Errno is the system error number of a network failure, 0 if none.
	Errno int32
	// Proto is the protocol of Code.
	Proto Proto
	// Class is the outcome.
	Class Class
}

// Latency returns Done-Intended.
func (s *Sample) Latency() int64 { return s.Done - s.Intended }

// Service returns Done-Sent.
func (s *Sample) Service() int64 { return s.Done - s.Sent }

// Lateness returns Sent-Intended.
func (s *Sample) Lateness() int64 { return s.Sent - s.Intended }

// ClassifyError returns the class and errno of a transport error: timeouts
// (including context deadlines), connection errors (refused, reset, broken
// pipe, EOF), cancellations, and Other for the rest. A nil error is OK.
func ClassifyError(err error) (Class, int32) {
	if err == nil {
		return OK, 0
	}
	var errno syscall.Errno
	hasErrno := errors.As(err, &errno)
	switch {
	case errors.Is(err, context.Canceled):
		return Canceled, 0
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return Timeout, int32(syscall.ETIMEDOUT)
	case hasErrno && errno == syscall.ETIMEDOUT:
		return Timeout, int32(errno)
	case hasErrno:
		return Conn, int32(errno)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Timeout, int32(syscall.ETIMEDOUT)
	}
	var oe *net.OpError
	if errors.As(err, &oe) || errors.Is(err, net.ErrClosed) || isEOF(err) {
		return Conn, int32(syscall.ECONNRESET)
	}
	return Other, 0
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
