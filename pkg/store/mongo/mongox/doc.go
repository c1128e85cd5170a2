// Package mongox holds the MongoDB plumbing that Capstan's Mongo layers
// share and that does not know about resources: connecting with sane
// defaults (Connect), describing the server (Describe), mapping driver and
// server errors to errs codes (Err) and creating indexes idempotently
// (EnsureIndexes).
//
// Error mapping (Err) follows one rule per failure class, so that callers
// decide on codes, never on driver types:
//
//   - duplicate key (11000, 11001, 12582) and NamespaceExists: AlreadyExists
//   - mongo.ErrNoDocuments, NamespaceNotFound, IndexNotFound,
//     CursorNotFound: NotFound
//   - network errors, server selection failures (also when the caller's
//     deadline ended the selection: the server was unreachable), shutdown,
//     stepdown and not-primary errors, retryable labels: Unavailable
//   - timeouts (the caller's deadline, maxTimeMS, wtimeout): DeadlineExceeded
//   - the caller's context canceled: Canceled
//   - malformed commands or documents (BadValue, TypeMismatch, documents
//     over 16 MiB, ...): InvalidArgument
//   - index specifications that conflict with existing ones:
//     FailedPrecondition
//   - commands or stages the server lacks (NotImplemented, CommandNotFound,
//     change streams on a standalone server): Unimplemented
//   - change-stream history lost (286, 280) and CappedPositionLost:
//     OutOfRange
//   - write conflicts and aborted transactions: Aborted
//   - authentication: Unauthenticated; authorization: PermissionDenied
//   - anything else: Unknown
//
// The mapped error wraps the original, so errors.As still finds the
// driver's types.
package mongox
