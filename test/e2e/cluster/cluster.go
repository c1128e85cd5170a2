// Package cluster runs the processes of the coordination end-to-end tests:
// one store (`capstan run` serving its embedded MongoDB-wire store) and any
// number of test operator replicas (test/e2e/operator), either as host
// processes (Processes) or as containers on a private Docker network
// (Containers). Both give the tests the same handles on a replica: kill it
// with SIGKILL, pause and resume it with SIGSTOP and SIGCONT, cut it off
// from the store and reconnect it, stop it gracefully.
package cluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
)

// Cluster is a running store plus the replicas started on it.
type Cluster interface {
	// Kind says what runs the processes: "processes" or "containers".
	Kind() string
	// StoreURI is the store's connection string for the test process.
	StoreURI() string
	// StartReplica starts an operator replica and returns once it has
	// registered (printed its ready line).
	StartReplica(ctx context.Context, spec ReplicaSpec) (Replica, error)
	// Close stops every replica and the store and releases what the
	// cluster created.
	Close(ctx context.Context) error
}

// ReplicaSpec describes an operator replica.
type ReplicaSpec struct {
	// Name is the replica's name (--replica).
	Name string
	// Database holds the test's objects (--database).
	Database string
	// Modes are the operator's modes (leader, lock, shard).
	Modes []string
	// Args are further operator flags.
	Args []string
}

// args returns the operator's command line arguments for storeURI.
func (s ReplicaSpec) args(storeURI string) []string {
	return append([]string{
		"--mongo-uri", storeURI,
		"--database", s.Database,
		"--replica", s.Name,
		"--modes", strings.Join(s.Modes, ","),
	}, s.Args...)
}

// Replica is a running (or stopped) operator replica.
type Replica interface {
	// Name is the replica's name.
	Name() string
	// Kill sends SIGKILL and returns once the process is gone.
	Kill(ctx context.Context) error
	// Pause sends SIGSTOP; Resume sends SIGCONT.
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	// Disconnect cuts the replica off from the store: its packets are
	// dropped, new connections hang. Reconnect heals the cut; connections
	// that were open across it are reset.
	Disconnect(ctx context.Context) error
	Reconnect(ctx context.Context) error
	// Stop sends SIGTERM and waits for the process to exit (SIGKILL after
	// a grace period).
	Stop(ctx context.Context) error
	// Exited reports whether the process has ended.
	Exited() bool
	// Logs returns what the process wrote so far.
	Logs() string
	// Close kills the process if it runs and releases its resources.
	Close(ctx context.Context) error
}

// ReadyLine is what an operator prints once it has registered.
const ReadyLine = "e2e-operator ready"

// StoreReadyLine is what `capstan run` prints once its store listens.
const StoreReadyLine = "capstan: store listening on"

// Binaries are the statically linked programs the cluster runs.
type Binaries struct {
	// Capstan is cmd/capstan.
	Capstan string
	// Operator is test/e2e/operator.
	Operator string
}

// Build compiles cmd/capstan and test/e2e/operator with CGO disabled
// (static binaries that run in an empty image) into dir.
func Build(ctx context.Context, dir string) (Binaries, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return Binaries{}, err
	}
	b := Binaries{Capstan: filepath.Join(dir, "capstan"), Operator: filepath.Join(dir, "operator")}
	for out, pkg := range map[string]string{b.Capstan: "./cmd/capstan", b.Operator: "./test/e2e/operator"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return Binaries{}, errs.Wrap(errs.Internal, err, "go build %s: %s", pkg, out)
		}
	}
	if err := statSources(ctx, root, "./cmd/capstan", "./test/e2e/operator"); err != nil {
		return Binaries{}, err
	}
	return b, nil
}

// statSources stats every Go file of the module's packages that pkgs are
// built from, and go.mod and go.sum. go test caches a result by what the
// test binary was built from and by the files the test itself touched; it
// does not see what a go build child reads. The stats put those sources
// among the suite's inputs, so that changing them reruns the suite rather
// than replaying a result of the old code.
func statSources(ctx context.Context, root string, pkgs ...string) error {
	args := append([]string{"list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}"}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return errs.Wrap(errs.Internal, err, "go list the packages of the e2e binaries")
	}
	files := []string{filepath.Join(root, "go.mod"), filepath.Join(root, "go.sum")}
	for _, dir := range strings.Fields(string(out)) {
		if rel, err := filepath.Rel(root, dir); err != nil || strings.HasPrefix(rel, "..") {
			continue // a dependency's module, pinned by go.sum
		}
		matches, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			return errs.Wrap(errs.Internal, err, "list %s", dir)
		}
		files = append(files, matches...)
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			return errs.Wrap(errs.Internal, err, "stat %s", f)
		}
	}
	return nil
}

// moduleRoot returns the directory of the module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", errs.Wrap(errs.Internal, err, "go env GOMOD")
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errs.New(errs.FailedPrecondition, "not inside the capstan module")
	}
	return filepath.Dir(gomod), nil
}

// waitExit waits until done closes or d passes.
func waitExit(ctx context.Context, done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}
