package mongox

import (
	"context"
	"errors"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/capstanhq/capstan/pkg/errs"
)

// Server error codes this package and its callers inspect.
const (
	CodeBadValue                  = 2
	CodeHostUnreachable           = 6
	CodeHostNotFound              = 7
	CodeFailedToParse             = 9
	CodeUnauthorized              = 13
	CodeTypeMismatch              = 14
	CodeAuthenticationFailed      = 18
	CodeIllegalOperation          = 20
	CodeNamespaceNotFound         = 26
	CodeIndexNotFound             = 27
	CodeCursorNotFound            = 43
	CodeNamespaceExists           = 48
	CodeMaxTimeMSExpired          = 50
	CodeDollarPrefixedFieldName   = 52
	CodeInvalidIDField            = 53
	CodeCommandNotFound           = 59
	CodeWriteConcernFailed        = 64
	CodeImmutableField            = 66
	CodeCannotCreateIndex         = 67
	CodeIndexAlreadyExists        = 68
	CodeInvalidOptions            = 72
	CodeIndexOptionsConflict      = 85
	CodeIndexKeySpecsConflict     = 86
	CodeNetworkTimeout            = 89
	CodeShutdownInProgress        = 91
	CodeUnsatisfiableWriteConcern = 100
	CodeWriteConflict             = 112
	CodeCommandNotSupported       = 115
	CodeDocumentValidationFailed  = 121
	CodeCappedPositionLost        = 136
	CodePrimarySteppedDown        = 189
	CodeNotImplemented            = 238
	CodeNoSuchTransaction         = 251
	CodeExceededTimeLimit         = 262
	CodeChangeStreamFatalError    = 280
	CodeChangeStreamHistoryLost   = 286
	CodeSocketException           = 9001
	CodeNotWritablePrimary        = 10107
	CodeBSONObjectTooLarge        = 10334
	CodeDuplicateKey              = 11000
	CodeDuplicateKeyOnUpdate      = 11001
	CodeInterruptedAtShutdown     = 11600
	CodeInterrupted               = 11601
	CodeInterruptedReplChange     = 11602
	CodeDuplicateKeyCapped        = 12582
	CodeNotPrimaryNoSecondaryOk   = 13435
	CodeNotPrimaryOrSecondary     = 13436
	CodeDocumentTooLarge          = 17419
	CodeDocumentTooLargeUpdate    = 17420
	CodeChangeStreamNotReplSet    = 40573
)

// codeTable maps server error codes to errs codes. Duplicate keys and
// timeouts are decided before the table is consulted.
var codeTable = map[int]errs.Code{
	CodeBadValue:                  errs.InvalidArgument,
	CodeFailedToParse:             errs.InvalidArgument,
	CodeTypeMismatch:              errs.InvalidArgument,
	CodeDollarPrefixedFieldName:   errs.InvalidArgument,
	CodeInvalidIDField:            errs.InvalidArgument,
	CodeImmutableField:            errs.InvalidArgument,
	CodeInvalidOptions:            errs.InvalidArgument,
	CodeDocumentValidationFailed:  errs.InvalidArgument,
	CodeBSONObjectTooLarge:        errs.InvalidArgument,
	CodeDocumentTooLarge:          errs.InvalidArgument,
	CodeDocumentTooLargeUpdate:    errs.InvalidArgument,
	CodeNamespaceExists:           errs.AlreadyExists,
	CodeNamespaceNotFound:         errs.NotFound,
	CodeIndexNotFound:             errs.NotFound,
	CodeCursorNotFound:            errs.NotFound,
	CodeMaxTimeMSExpired:          errs.DeadlineExceeded,
	CodeExceededTimeLimit:         errs.DeadlineExceeded,
	CodeNetworkTimeout:            errs.DeadlineExceeded,
	CodeWriteConcernFailed:        errs.DeadlineExceeded,
	CodeHostUnreachable:           errs.Unavailable,
	CodeHostNotFound:              errs.Unavailable,
	CodeShutdownInProgress:        errs.Unavailable,
	CodePrimarySteppedDown:        errs.Unavailable,
	CodeSocketException:           errs.Unavailable,
	CodeNotWritablePrimary:        errs.Unavailable,
	CodeInterruptedAtShutdown:     errs.Unavailable,
	CodeInterruptedReplChange:     errs.Unavailable,
	CodeNotPrimaryNoSecondaryOk:   errs.Unavailable,
	CodeNotPrimaryOrSecondary:     errs.Unavailable,
	CodeUnauthorized:              errs.PermissionDenied,
	CodeAuthenticationFailed:      errs.Unauthenticated,
	CodeIllegalOperation:          errs.FailedPrecondition,
	CodeUnsatisfiableWriteConcern: errs.FailedPrecondition,
	CodeCannotCreateIndex:         errs.FailedPrecondition,
	CodeIndexAlreadyExists:        errs.FailedPrecondition,
	CodeIndexOptionsConflict:      errs.FailedPrecondition,
	CodeIndexKeySpecsConflict:     errs.FailedPrecondition,
	CodeCommandNotFound:           errs.Unimplemented,
	CodeCommandNotSupported:       errs.Unimplemented,
	CodeNotImplemented:            errs.Unimplemented,
	CodeChangeStreamNotReplSet:    errs.Unimplemented,
	CodeChangeStreamFatalError:    errs.OutOfRange,
	CodeChangeStreamHistoryLost:   errs.OutOfRange,
	CodeCappedPositionLost:        errs.OutOfRange,
	CodeWriteConflict:             errs.Aborted,
	CodeNoSuchTransaction:         errs.Aborted,
	CodeInterrupted:               errs.Canceled,
}

// retryableLabels mark errors after which the same operation may succeed.
var retryableLabels = []string{"RetryableWriteError", "TransientTransactionError", "ResumableChangeStreamError", "NetworkError"}

// Err maps an error from the driver to an errs code, wrapping it (see the
// package doc for the mapping). nil stays nil and an error that already
// carries an errs code is returned unchanged.
func Err(err error) error {
	if err == nil {
		return nil
	}
	var coded *errs.Error
	if errors.As(err, &coded) {
		return err
	}
	code := Classify(err)
	return errs.Wrap(code, err, "mongo")
}

// Errf is Err with a message naming what failed, for example
// Errf(err, "insert %s", id).
func Errf(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	var coded *errs.Error
	if errors.As(err, &coded) {
		return err
	}
	return errs.Wrap(Classify(err), err, format, args...)
}

// Classify returns the errs code for a driver error (see the package doc).
func Classify(err error) errs.Code {
	switch {
	case err == nil:
		return errs.OK
	case errors.Is(err, mongo.ErrNoDocuments):
		return errs.NotFound
	case errors.Is(err, mongo.ErrClientDisconnected):
		return errs.FailedPrecondition
	case errors.Is(err, context.Canceled):
		return errs.Canceled
	case mongo.IsDuplicateKeyError(err):
		return errs.AlreadyExists
	}
	// No server answered within the server selection timeout (the driver
	// reports it as a context deadline of its own) or the caller's
	// deadline: either way the cause is an unreachable server.
	var sse topology.ServerSelectionError
	if errors.As(err, &sse) {
		return errs.Unavailable
	}
	if mongo.IsTimeout(err) {
		return errs.DeadlineExceeded
	}
	if mongo.IsNetworkError(err) {
		return errs.Unavailable
	}
	var se mongo.ServerError
	if errors.As(err, &se) {
		for _, c := range se.ErrorCodes() {
			if code, ok := codeTable[c]; ok {
				return code
			}
		}
		for _, l := range retryableLabels {
			if se.HasErrorLabel(l) {
				return errs.Unavailable
			}
		}
	}
	var ia mongo.InvalidArgumentError
	var me mongo.MarshalError
	if errors.As(err, &ia) || errors.As(err, &me) {
		return errs.InvalidArgument
	}
	var ce topology.ConnectionError
	if errors.As(err, &ce) {
		return errs.Unavailable
	}
	return errs.Unknown
}

// ServerCode returns the first server error code in err's chain and
// whether there is one.
func ServerCode(err error) (int, bool) {
	var se mongo.ServerError
	if errors.As(err, &se) {
		if codes := se.ErrorCodes(); len(codes) > 0 {
			return codes[0], true
		}
	}
	return 0, false
}

// HasCode reports whether err carries the server error code.
func HasCode(err error, code int) bool {
	var se mongo.ServerError
	return errors.As(err, &se) && se.HasErrorCode(code)
}

// Retryable reports whether the operation that failed with err may succeed
// when tried again unchanged: the server was unreachable, stepped down or
// shut down.
func Retryable(err error) bool {
	return errs.CodeOf(Err(err)) == errs.Unavailable
}
