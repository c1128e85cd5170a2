package gun

import (
	"context"
	"sort"
	"sync"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/ammo"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
	"github.com/capstanhq/capstan/pkg/loadtest/files"
)

// Shot is one firing: the engine fills Ammo and Intended, the gun fills the
// outcome fields.
type Shot struct {
	// Ammo is what to fire. The gun MUST NOT modify or retain it.
	Ammo *ammo.Ammo
	// Intended is the schedule's time for the shot, in nanoseconds since
	// the run's start.
	Intended int64

	// Code is the protocol result code (HTTP status, gRPC code).
	Code int32
	// Proto is the protocol of Code.
	Proto aggregate.Proto
	// Class is the outcome class.
	Class aggregate.Class
	// Errno is the system error number of a network failure.
	Errno int32
	// BytesOut and BytesIn count the bytes sent and received.
	BytesOut, BytesIn int64
	// Connect, Send and Receive are the shot's phases in nanoseconds (see
	// aggregate.Sample): the dial and TLS handshake of a connection the
	// shot opened, the writing of the request, and the time from the first
	// byte of the response to its last. Guns that do not measure them
	// leave them 0.
	Connect, Send, Receive int64
	// Err is the failure, if any, for logs.
	Err error
}

// Fail records err as the outcome, classifying it with
// aggregate.ClassifyError.
func (s *Shot) Fail(err error) {
	s.Err = err
	s.Class, s.Errno = aggregate.ClassifyError(err)
}

// reset clears the outcome fields.
func (s *Shot) reset() {
	s.Code, s.Proto, s.Class, s.Errno, s.BytesOut, s.BytesIn, s.Err = 0, 0, aggregate.OK, 0, 0, 0, nil
	s.Connect, s.Send, s.Receive = 0, 0, 0
}

// Reset clears the outcome fields, for reuse of a Shot.
func (s *Shot) Reset() { s.reset() }

// Gun fires ammo. A gun is used by one goroutine at a time.
//
// Shoot MUST return promptly once ctx is done, recording the shot as
// Canceled (or Timeout); it MUST NOT retain the shot or its ammo after it
// returns. Close releases the gun's connections.
type Gun interface {
	// Shoot fires s.Ammo and fills s's outcome.
	Shoot(ctx context.Context, s *Shot)
	// Close releases the gun.
	Close() error
}

// Env is what an engine instance gives the gun it asks for.
type Env struct {
	// Instance is the instance's number within its pool.
	Instance int
	// Now returns the run's clock: nanoseconds since its start.
	Now func() int64
	// Report records an extra sample, for guns that make several requests
	// per shot (scenario steps).
	Report func(aggregate.Sample)
	// Phases asks for the shots' phases (Shot.Connect, Send, Receive)
	// from guns that pay for measuring them (net/http's tracing
	// allocates); the engine sets it when a sink wants them (phout). Guns
	// that measure phases for free fill them regardless.
	Phases bool
}

// Factory makes the guns of one pool and holds what they share.
type Factory interface {
	// New returns a gun for one instance.
	New(ctx context.Context, env Env) (Gun, error)
	// Close releases shared resources, after every gun is closed.
	Close() error
}

// Constructor builds a Factory from a pool's gun spec. fsys opens the
// files the spec names (relative to the config file's directory for
// `capstan loadtest run`, confined to the files directory for a LoadTest);
// a gun reads files only through it. Errors should name the offending
// field of the spec (errs.Invalid).
type Constructor func(ctx context.Context, spec *config.GunSpec, fsys files.FS) (Factory, error)

// Registry maps gun types to constructors. It is safe for concurrent use.
type Registry struct {
	mu sync.RWMutex
	m  map[string]Constructor
}

// NewRegistry returns a registry holding the built-in guns: http, grpc and
// scenario.
func NewRegistry() *Registry {
	r := &Registry{m: map[string]Constructor{}}
	r.m["http"] = NewHTTP
	r.m["grpc"] = NewGRPC
	r.m["scenario"] = NewScenario
	return r
}

// Register adds a gun type. Registering a type twice is an error.
func (r *Registry) Register(name string, c Constructor) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if name == "" || c == nil {
		return errs.New(errs.InvalidArgument, "gun type needs a name and a constructor")
	}
	if _, ok := r.m[name]; ok {
		return errs.New(errs.AlreadyExists, "gun type %q already registered", name)
	}
	r.m[name] = c
	return nil
}

// Types returns the registered type names, sorted.
func (r *Registry) Types() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.m))
	for k := range r.m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Build returns the factory for spec, or an InvalidArgument error naming
// "type" for an unknown type. fsys opens the files the spec names; nil
// opens them as they are named (files.Dir("")).
func (r *Registry) Build(ctx context.Context, spec *config.GunSpec, fsys files.FS) (Factory, error) {
	r.mu.RLock()
	c, ok := r.m[spec.Type]
	r.mu.RUnlock()
	if !ok {
		return nil, errs.Invalid("type", "unknown gun type %q (known: %v)", spec.Type, r.Types())
	}
	if fsys == nil {
		fsys = files.Dir("")
	}
	return c(ctx, spec, fsys)
}
