package errs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Code classifies an error. The numbering of every code but Conflict is
// gRPC's, so GRPCCode is the identity for them.
type Code int

// The error codes. OK is the code of a nil error.
const (
	OK                 Code = 0
	Canceled           Code = 1
	Unknown            Code = 2
	InvalidArgument    Code = 3
	DeadlineExceeded   Code = 4
	NotFound           Code = 5
	AlreadyExists      Code = 6
	PermissionDenied   Code = 7
	ResourceExhausted  Code = 8
	FailedPrecondition Code = 9
	Aborted            Code = 10
	OutOfRange         Code = 11
	Unimplemented      Code = 12
	Internal           Code = 13
	Unavailable        Code = 14
	DataLoss           Code = 15
	Unauthenticated    Code = 16
	// Conflict reports a compare-and-swap write against a stale version
	// (resourceVersion, fencing token). gRPC has no such code; GRPCCode maps
	// it to Aborted, as Google's API guidelines do for concurrency conflicts.
	Conflict Code = 100
)

var codeNames = map[Code]string{
	OK: "OK", Canceled: "Canceled", Unknown: "Unknown", InvalidArgument: "InvalidArgument",
	DeadlineExceeded: "DeadlineExceeded", NotFound: "NotFound", AlreadyExists: "AlreadyExists",
	PermissionDenied: "PermissionDenied", ResourceExhausted: "ResourceExhausted",
	FailedPrecondition: "FailedPrecondition", Aborted: "Aborted", OutOfRange: "OutOfRange",
	Unimplemented: "Unimplemented", Internal: "Internal", Unavailable: "Unavailable",
	DataLoss: "DataLoss", Unauthenticated: "Unauthenticated", Conflict: "Conflict",
}

// String returns the code's name, for example "NotFound".
func (c Code) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("Code(%d)", int(c))
}

// ParseCode returns the code with the given name (as printed by String).
func ParseCode(name string) (Code, bool) {
	for c, n := range codeNames {
		if strings.EqualFold(n, name) {
			return c, true
		}
	}
	return Unknown, false
}

// GRPCCode returns the gRPC status code number for c.
func (c Code) GRPCCode() int {
	if c == Conflict {
		return int(Aborted)
	}
	if _, ok := codeNames[c]; !ok {
		return int(Unknown)
	}
	return int(c)
}

// HTTPStatus returns the HTTP status that best represents c, following the
// mapping of gRPC-HTTP transcoding (Conflict and Aborted are 409).
func (c Code) HTTPStatus() int {
	switch c {
	case OK:
		return http.StatusOK
	case Canceled:
		return 499 // client closed request
	case InvalidArgument, OutOfRange:
		return http.StatusBadRequest
	case DeadlineExceeded:
		return http.StatusGatewayTimeout
	case NotFound:
		return http.StatusNotFound
	case AlreadyExists, Aborted, Conflict:
		return http.StatusConflict
	case PermissionDenied:
		return http.StatusForbidden
	case Unauthenticated:
		return http.StatusUnauthorized
	case ResourceExhausted:
		return http.StatusTooManyRequests
	case FailedPrecondition:
		return http.StatusPreconditionFailed
	case Unimplemented:
		return http.StatusNotImplemented
	case Unavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// Error is an error with a code, an optional field path and an optional
// cause. Its message reads "Code: field: message: cause".
type Error struct {
	// Code classifies the error.
	Code Code
	// Field is the path of the input field at fault, for example
	// "metadata.name" or "spec.pools[0].gun"; empty when no field is.
	Field string
	// Message says what went wrong.
	Message string
	// Cause is the underlying error, if any; Unwrap returns it.
	Cause error
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Code.String())
	if e.Field != "" {
		b.WriteString(": ")
		b.WriteString(e.Field)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Cause != nil {
		b.WriteString(": ")
		b.WriteString(e.Cause.Error())
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Cause }

// New returns an error with code and a formatted message.
func New(code Code, format string, args ...any) error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Field returns an error with code that names the input field at fault.
func Field(code Code, field, format string, args ...any) error {
	return &Error{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns an InvalidArgument error naming field.
func Invalid(field, format string, args ...any) error {
	return Field(InvalidArgument, field, format, args...)
}

// Wrap returns an error with code, a formatted message and cause. A nil
// cause gives a plain coded error.
func Wrap(code Code, cause error, format string, args ...any) error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Cause: cause}
}

// WithField returns err with its field path prefixed by parent, so that a
// nested validator's "replicas" becomes "spec.replicas". An error without a
// code becomes InvalidArgument. A nil err stays nil.
func WithField(err error, parent string) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		c := *e
		switch {
		case c.Field == "":
			c.Field = parent
		case strings.HasPrefix(c.Field, "["):
			c.Field = parent + c.Field
		default:
			c.Field = parent + "." + c.Field
		}
		return &c
	}
	return &Error{Code: InvalidArgument, Field: parent, Cause: err}
}

// CodeOf returns the code of err: OK for nil, the code of the first *Error
// in its chain, Canceled or DeadlineExceeded for context errors, and
// Unknown otherwise.
func CodeOf(err error) Code {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	var c interface{ ErrorCode() Code }
	if errors.As(err, &c) {
		return c.ErrorCode()
	}
	switch {
	case errors.Is(err, context.Canceled):
		return Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded
	}
	return Unknown
}

// FieldOf returns the field path of the first *Error in err's chain.
func FieldOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Field
	}
	return ""
}

// Is reports whether err has code.
func Is(err error, code Code) bool { return CodeOf(err) == code }

// HTTPStatus returns the HTTP status for err's code.
func HTTPStatus(err error) int { return CodeOf(err).HTTPStatus() }

// IsNotFound reports whether err has code NotFound.
func IsNotFound(err error) bool { return Is(err, NotFound) }

// IsAlreadyExists reports whether err has code AlreadyExists.
func IsAlreadyExists(err error) bool { return Is(err, AlreadyExists) }

// IsConflict reports whether err has code Conflict.
func IsConflict(err error) bool { return Is(err, Conflict) }

// IsInvalidArgument reports whether err has code InvalidArgument.
func IsInvalidArgument(err error) bool { return Is(err, InvalidArgument) }

// IsFailedPrecondition reports whether err has code FailedPrecondition.
func IsFailedPrecondition(err error) bool { return Is(err, FailedPrecondition) }

// IsUnavailable reports whether err has code Unavailable.
func IsUnavailable(err error) bool { return Is(err, Unavailable) }

// IsDeadlineExceeded reports whether err has code DeadlineExceeded.
func IsDeadlineExceeded(err error) bool { return Is(err, DeadlineExceeded) }

// IsCanceled reports whether err has code Canceled.
func IsCanceled(err error) bool { return Is(err, Canceled) }

// IsInternal reports whether err has code Internal.
func IsInternal(err error) bool { return Is(err, Internal) }

// IsUnimplemented reports whether err has code Unimplemented.
func IsUnimplemented(err error) bool { return Is(err, Unimplemented) }

// IsResourceExhausted reports whether err has code ResourceExhausted.
func IsResourceExhausted(err error) bool { return Is(err, ResourceExhausted) }

// IsPermissionDenied reports whether err has code PermissionDenied.
func IsPermissionDenied(err error) bool { return Is(err, PermissionDenied) }

// IsUnauthenticated reports whether err has code Unauthenticated.
func IsUnauthenticated(err error) bool { return Is(err, Unauthenticated) }

// IsAborted reports whether err has code Aborted.
func IsAborted(err error) bool { return Is(err, Aborted) }
