package errs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

var allCodes = []Code{OK, Canceled, Unknown, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists,
	PermissionDenied, ResourceExhausted, FailedPrecondition, Aborted, OutOfRange, Unimplemented,
	Internal, Unavailable, DataLoss, Unauthenticated, Conflict}

func TestCodeNames(t *testing.T) {
	for _, c := range allCodes {
		name := c.String()
		got, ok := ParseCode(name)
		if !ok || got != c {
			t.Errorf("ParseCode(%q) = %v %v, want %v", name, got, ok, c)
		}
	}
	if c, ok := ParseCode("notfound"); !ok || c != NotFound {
		t.Errorf("ParseCode is not case-insensitive: %v %v", c, ok)
	}
	if c, ok := ParseCode("Bogus"); ok || c != Unknown {
		t.Errorf("ParseCode(Bogus) = %v %v", c, ok)
	}
	if s := Code(42).String(); s != "Code(42)" {
		t.Errorf("unknown code prints %q", s)
	}
}

func TestGRPCCode(t *testing.T) {
	for _, c := range allCodes {
		want := int(c)
		if c == Conflict {
			want = int(Aborted)
		}
		if got := c.GRPCCode(); got != want {
			t.Errorf("%v.GRPCCode() = %d, want %d", c, got, want)
		}
		if c != Conflict && (c.GRPCCode() < 0 || c.GRPCCode() > 16) {
			t.Errorf("%v maps outside gRPC's codes", c)
		}
	}
	if Code(42).GRPCCode() != int(Unknown) {
		t.Error("unknown code must map to gRPC Unknown")
	}
}

func TestHTTPStatus(t *testing.T) {
	want := map[Code]int{
		OK: 200, Canceled: 499, Unknown: 500, InvalidArgument: 400, DeadlineExceeded: 504,
		NotFound: 404, AlreadyExists: 409, PermissionDenied: 403, ResourceExhausted: 429,
		FailedPrecondition: 412, Aborted: 409, OutOfRange: 400, Unimplemented: 501,
		Internal: 500, Unavailable: 503, DataLoss: 500, Unauthenticated: 401, Conflict: 409,
		Code(42): 500,
	}
	for c, status := range want {
		if got := c.HTTPStatus(); got != status {
			t.Errorf("%v.HTTPStatus() = %d, want %d", c, got, status)
		}
	}
	if HTTPStatus(nil) != http.StatusOK || HTTPStatus(New(NotFound, "x")) != 404 || HTTPStatus(io.EOF) != 500 {
		t.Error("HTTPStatus of errors")
	}
}

func TestErrorMessage(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{New(NotFound, "widget %s not found", "a"), "NotFound: widget a not found"},
		{Invalid("spec.size", "must be positive, got %d", -1), "InvalidArgument: spec.size: must be positive, got -1"},
		{Field(Conflict, "metadata.resourceVersion", "stale"), "Conflict: metadata.resourceVersion: stale"},
		{Wrap(Unavailable, io.EOF, "read %s", "x"), "Unavailable: read x: EOF"},
		{&Error{Code: Internal}, "Internal"},
		{&Error{Code: Internal, Cause: io.EOF}, "Internal: EOF"},
	}
	for _, c := range cases {
		if got := c.err.Error(); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}

type coded struct{ c Code }

func (e coded) Error() string   { return "coded" }
func (e coded) ErrorCode() Code { return e.c }

func TestCodeOf(t *testing.T) {
	ctxCanceled, cancel := context.WithCancel(context.Background())
	cancel()
	ctxExpired, cancel2 := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel2()
	<-ctxExpired.Done()
	cases := []struct {
		name string
		err  error
		want Code
	}{
		{"nil", nil, OK},
		{"plain", io.EOF, Unknown},
		{"coded", New(NotFound, "x"), NotFound},
		{"wrapped with %w", fmt.Errorf("get: %w", New(NotFound, "x")), NotFound},
		{"twice wrapped", fmt.Errorf("a: %w", fmt.Errorf("b: %w", Invalid("f", "x"))), InvalidArgument},
		{"outermost code wins", Wrap(Unavailable, New(NotFound, "x"), "y"), Unavailable},
		{"context.Canceled", context.Canceled, Canceled},
		{"context.DeadlineExceeded", context.DeadlineExceeded, DeadlineExceeded},
		{"a canceled context's error", ctxCanceled.Err(), Canceled},
		{"an expired context's error", ctxExpired.Err(), DeadlineExceeded},
		{"wrapped context error", fmt.Errorf("list: %w", context.DeadlineExceeded), DeadlineExceeded},
		{"coded wrapping a context error", Wrap(Unavailable, context.Canceled, "x"), Unavailable},
		{"ErrorCode interface", fmt.Errorf("x: %w", coded{PermissionDenied}), PermissionDenied},
		{"joined", errors.Join(io.EOF, New(AlreadyExists, "x")), AlreadyExists},
		{"%v does not wrap", fmt.Errorf("x: %v", New(NotFound, "y")), Unknown},
	}
	for _, c := range cases {
		if got := CodeOf(c.err); got != c.want {
			t.Errorf("%s: CodeOf = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestIsHelpers(t *testing.T) {
	helpers := map[Code]func(error) bool{
		NotFound: IsNotFound, AlreadyExists: IsAlreadyExists, Conflict: IsConflict,
		InvalidArgument: IsInvalidArgument, FailedPrecondition: IsFailedPrecondition,
		Unavailable: IsUnavailable, DeadlineExceeded: IsDeadlineExceeded, Canceled: IsCanceled,
		Internal: IsInternal, Unimplemented: IsUnimplemented, ResourceExhausted: IsResourceExhausted,
		PermissionDenied: IsPermissionDenied, Unauthenticated: IsUnauthenticated, Aborted: IsAborted,
	}
	for code, is := range helpers {
		for _, other := range allCodes {
			err := fmt.Errorf("wrapped: %w", New(other, "x"))
			if got := is(err); got != (other == code) {
				t.Errorf("Is%v(%v error) = %v", code, other, got)
			}
		}
		if is(nil) {
			t.Errorf("Is%v(nil) is true", code)
		}
	}
	if !Is(nil, OK) || Is(io.EOF, OK) {
		t.Error("Is with OK")
	}
}

func TestWithField(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		parent string
		field  string
		code   Code
	}{
		{"no field yet", New(InvalidArgument, "x"), "spec", "spec", InvalidArgument},
		{"nested", Invalid("replicas", "x"), "spec", "spec.replicas", InvalidArgument},
		{"index", Invalid("[2].name", "x"), "spec.items", "spec.items[2].name", InvalidArgument},
		{"keeps the code", Field(NotFound, "ref", "x"), "spec", "spec.ref", NotFound},
		{"through a wrap", fmt.Errorf("w: %w", Invalid("a", "x")), "b", "b.a", InvalidArgument},
		{"plain error", io.EOF, "spec.x", "spec.x", InvalidArgument},
	}
	for _, c := range cases {
		err := WithField(c.err, c.parent)
		if FieldOf(err) != c.field || CodeOf(err) != c.code {
			t.Errorf("%s: %v (field %q code %v), want %q %v", c.name, err, FieldOf(err), CodeOf(err), c.field, c.code)
		}
	}
	if WithField(nil, "x") != nil {
		t.Error("WithField(nil) is not nil")
	}
	orig := Invalid("a", "x")
	_ = WithField(orig, "b")
	if FieldOf(orig) != "a" {
		t.Error("WithField modified its argument")
	}
	plain := WithField(io.EOF, "f")
	if !errors.Is(plain, io.EOF) {
		t.Error("WithField of a plain error lost the cause")
	}
	if FieldOf(io.EOF) != "" || FieldOf(nil) != "" {
		t.Error("FieldOf of errors without a field")
	}
}

func TestUnwrap(t *testing.T) {
	err := Wrap(Internal, io.ErrUnexpectedEOF, "decode")
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Error("errors.Is does not see the cause")
	}
	var e *Error
	if !errors.As(fmt.Errorf("x: %w", err), &e) || e.Code != Internal {
		t.Error("errors.As does not find the *Error")
	}
	if Wrap(Internal, nil, "x").(*Error).Cause != nil {
		t.Error("Wrap with a nil cause")
	}
}
