//go:build unix

package cluster

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
)

// Processes runs the store and the replicas as processes on this host. A
// replica reaches the store through its own Proxy, which Disconnect cuts.
type Processes struct {
	bins      Binaries
	dir       string
	store     *process
	storeAddr string
	storeURI  string

	mu       sync.Mutex
	replicas []*procReplica
}

var _ Cluster = (*Processes)(nil)

// process is a started program and its output.
type process struct {
	cmd  *exec.Cmd
	logs *logBuffer
	done chan struct{}
	err  error // set before done closes
}

func startProcess(bin string, args ...string) (*process, error) {
	p := &process{logs: newLogBuffer(), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = procAttr()
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return errs.New(errs.FailedPrecondition, "process %d has exited", p.cmd.Process.Pid)
	default:
	}
	return syscall.Kill(p.cmd.Process.Pid, sig)
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL (and SIGCONT, in case it is stopped) and waits.
func (p *process) kill(ctx context.Context) error {
	if p.exited() {
		return nil
	}
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
	if !waitExit(ctx, p.done, 30*time.Second) {
		return errs.New(errs.DeadlineExceeded, "process %d did not die", p.cmd.Process.Pid)
	}
	return nil
}

// stop sends SIGTERM, waits up to grace, then kills.
func (p *process) stop(ctx context.Context, grace time.Duration) error {
	if p.exited() {
		return nil
	}
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGCONT)
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	if waitExit(ctx, p.done, grace) {
		return nil
	}
	if err := p.kill(ctx); err != nil {
		return err
	}
	return errs.New(errs.DeadlineExceeded, "process %d did not stop within %v after SIGTERM; killed", p.cmd.Process.Pid, grace)
}

// StartProcesses starts `capstan run` serving its embedded store on a free
// loopback port, with its data in dir.
func StartProcesses(ctx context.Context, bins Binaries, dir string) (*Processes, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	store, err := startProcess(bins.Capstan, "run",
		"--listen", "127.0.0.1:0",
		"--data-dir", filepath.Join(dir, "store"),
		"--metrics-bind-address", "0",
		"--health-probe-bind-address", "0",
		"--graceful-shutdown-timeout", "10s")
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	line, err := store.logs.waitLine(wctx, StoreReadyLine, store.done)
	if err != nil {
		_ = store.kill(context.Background())
		return nil, errs.Wrap(errs.Unavailable, err, "capstan run: %s", store.logs.String())
	}
	// "capstan: store listening on mongodb://127.0.0.1:PORT/?... (data in DIR)"
	fields := strings.Fields(strings.TrimSpace(strings.TrimPrefix(line[strings.Index(line, StoreReadyLine):], StoreReadyLine)))
	if len(fields) == 0 {
		_ = store.kill(context.Background())
		return nil, errs.New(errs.Internal, "cannot parse the store's address from %q", line)
	}
	u, err := url.Parse(fields[0])
	if err != nil {
		_ = store.kill(context.Background())
		return nil, errs.Wrap(errs.Internal, err, "cannot parse the store's URI from %q", line)
	}
	return &Processes{bins: bins, dir: dir, store: store, storeAddr: u.Host, storeURI: fields[0]}, nil
}

// Kind implements Cluster.
func (c *Processes) Kind() string { return "processes" }

// StoreURI implements Cluster.
func (c *Processes) StoreURI() string { return c.storeURI }

// StoreLogs returns what the store process wrote.
func (c *Processes) StoreLogs() string { return c.store.logs.String() }

// StartReplica implements Cluster.
func (c *Processes) StartReplica(ctx context.Context, spec ReplicaSpec) (Replica, error) {
	proxy, err := NewProxy(c.storeAddr)
	if err != nil {
		return nil, err
	}
	uri := fmt.Sprintf("mongodb://%s/?directConnection=true", proxy.Addr())
	p, err := startProcess(c.bins.Operator, spec.args(uri)...)
	if err != nil {
		_ = proxy.Close()
		return nil, err
	}
	r := &procReplica{name: spec.Name, p: p, proxy: proxy}
	c.mu.Lock()
	c.replicas = append(c.replicas, r)
	c.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := p.logs.waitLine(wctx, ReadyLine, p.done); err != nil {
		_ = r.Close(context.Background())
		return nil, errs.Wrap(errs.Unavailable, err, "replica %s did not get ready: %s", spec.Name, p.logs.String())
	}
	return r, nil
}

// Close implements Cluster.
func (c *Processes) Close(ctx context.Context) error {
	c.mu.Lock()
	replicas := c.replicas
	c.replicas = nil
	c.mu.Unlock()
	for _, r := range replicas {
		_ = r.Close(ctx)
	}
	return c.store.stop(ctx, 20*time.Second)
}

// procReplica is an operator process behind its proxy.
type procReplica struct {
	name  string
	p     *process
	proxy *Proxy
}

// The methods below implement Replica: signals go to the process, the
// network cut is its proxy's.

func (r *procReplica) Name() string                     { return r.name }
func (r *procReplica) Kill(ctx context.Context) error   { return r.p.kill(ctx) }
func (r *procReplica) Pause(context.Context) error      { return r.p.signal(syscall.SIGSTOP) }
func (r *procReplica) Resume(context.Context) error     { return r.p.signal(syscall.SIGCONT) }
func (r *procReplica) Disconnect(context.Context) error { r.proxy.Cut(); return nil }
func (r *procReplica) Reconnect(context.Context) error  { r.proxy.Restore(); return nil }
func (r *procReplica) Stop(ctx context.Context) error   { return r.p.stop(ctx, 30*time.Second) }
func (r *procReplica) Exited() bool                     { return r.p.exited() }
func (r *procReplica) Logs() string                     { return r.p.logs.String() }
func (r *procReplica) Close(ctx context.Context) error {
	err := r.p.kill(ctx)
	_ = r.proxy.Close()
	return err
}
