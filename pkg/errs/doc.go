// Package errs defines Capstan's error codes and the error type that carries
// them.
//
// Codes follow gRPC's (InvalidArgument, NotFound, AlreadyExists, …) with one
// addition, Conflict, for a compare-and-swap write that lost against a newer
// version. An *Error may name the field at fault ("spec.replicas",
// "metadata.name") so that bad input can be reported precisely. CodeOf and
// the Is… helpers see through fmt.Errorf("%w") chains and map context errors
// to Canceled and DeadlineExceeded; HTTPStatus and GRPCCode map codes to the
// numbers other protocols speak.
package errs
