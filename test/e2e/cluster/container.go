package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	dockernet "github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/capstanhq/capstan/pkg/errs"
)

// Containers runs the store and the replicas as containers on a private
// Docker network, from the Images built here from the static binaries
// (FROM scratch: nothing is pulled). Disconnect takes a replica off the
// network.
//
// testcontainers-go must be configured for this machine before the first
// call (see ConfigureTestcontainers).
type Containers struct {
	docker   *testcontainers.DockerClient
	network  *testcontainers.DockerNetwork
	images   *Images
	store    testcontainers.Container
	storeLog *logBuffer
	storeURI string

	mu       sync.Mutex
	replicas []*containerReplica
}

var _ Cluster = (*Containers)(nil)

// storeAlias is the store's name on the private network.
const storeAlias = "store"

// ConfigureTestcontainers sets what testcontainers-go needs on a machine
// that cannot pull images and must reach the engine on loopback: no reaper
// container (its image cannot be pulled; Close removes everything), and
// 127.0.0.1 as the host of mapped ports. Call it before any other
// testcontainers-go call.
func ConfigureTestcontainers() {
	_ = os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	_ = os.Setenv("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
}

// DockerAvailable reports whether a Docker engine answers (nil) or why
// not.
func DockerAvailable(ctx context.Context) error {
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = cli.Ping(ctx, client.PingOptions{})
	return err
}

// Images are the two images the containers run: the store (`capstan`)
// and the test operator, both FROM scratch with one static binary.
type Images struct {
	docker   *testcontainers.DockerClient
	Store    string
	Operator string
}

// BuildImages builds the images from bins, using dir for the build
// contexts; Remove deletes them.
func BuildImages(ctx context.Context, bins Binaries, dir string) (*Images, error) {
	docker, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "docker client")
	}
	im := &Images{docker: docker}
	suffix := randomSuffix()
	im.Store, err = buildImage(ctx, filepath.Join(dir, "store-image"), bins.Capstan, "capstan", "capstan-e2e-store", suffix)
	if err == nil {
		im.Operator, err = buildImage(ctx, filepath.Join(dir, "operator-image"), bins.Operator, "operator", "capstan-e2e-operator", suffix)
	}
	if err != nil {
		_ = im.Remove(context.WithoutCancel(ctx))
		return nil, err
	}
	return im, nil
}

// Remove deletes the images.
func (im *Images) Remove(ctx context.Context) error {
	var first error
	for _, img := range []string{im.Store, im.Operator} {
		if img == "" {
			continue
		}
		if _, err := im.docker.ImageRemove(ctx, img, client.ImageRemoveOptions{Force: true, PruneChildren: true}); err != nil && first == nil {
			first = err
		}
	}
	if err := im.docker.Close(); err != nil && first == nil {
		first = err
	}
	return first
}

// StartContainers creates a private network and starts the store on it.
func StartContainers(ctx context.Context, images *Images) (_ *Containers, err error) {
	c := &Containers{docker: images.docker, images: images, storeLog: newLogBuffer()}
	defer func() {
		if err != nil {
			_ = c.Close(context.WithoutCancel(ctx))
		}
	}()
	c.network, err = tcnetwork.New(ctx)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "create network")
	}
	c.store, err = testcontainers.Run(ctx, images.Store,
		testcontainers.WithEntrypoint("/capstan"),
		testcontainers.WithCmd("run",
			"--listen", "0.0.0.0:27017",
			"--data-dir", "/data",
			"--metrics-bind-address", "0",
			"--health-probe-bind-address", "0",
			"--graceful-shutdown-timeout", "10s"),
		testcontainers.WithExposedPorts("27017/tcp"),
		tcnetwork.WithNetwork([]string{storeAlias}, c.network),
		testcontainers.WithLogConsumers(logConsumer{c.storeLog}),
		testcontainers.WithWaitStrategyAndDeadline(90*time.Second,
			wait.ForLog(StoreReadyLine),
			wait.ForListeningPort("27017/tcp").SkipInternalCheck()),
	)
	if err != nil {
		return nil, errs.Wrap(errs.Unavailable, err, "start the store container: %s", c.storeLog.String())
	}
	ep, err := c.store.PortEndpoint(ctx, "27017/tcp", "")
	if err != nil {
		return nil, err
	}
	c.storeURI = fmt.Sprintf("mongodb://%s/?directConnection=true", ep)
	return c, nil
}

// buildImage builds a FROM scratch image holding bin as /name.
func buildImage(ctx context.Context, dir, bin, name, repo, tag string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := copyFile(bin, filepath.Join(dir, name), 0o755); err != nil {
		return "", err
	}
	dockerfile := fmt.Sprintf("FROM scratch\nCOPY %s /%s\nENTRYPOINT [\"/%s\"]\n", name, name, name)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return "", err
	}
	provider, err := testcontainers.NewDockerProvider()
	if err != nil {
		return "", err
	}
	defer provider.Close()
	img, err := provider.BuildImage(ctx, &testcontainers.ContainerRequest{
		FromDockerfile: testcontainers.FromDockerfile{Context: dir, Repo: repo, Tag: tag},
	})
	if err != nil {
		return "", errs.Wrap(errs.Unavailable, err, "build image %s:%s", repo, tag)
	}
	return img, nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

func randomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// logConsumer appends a container's output to a logBuffer.
type logConsumer struct{ buf *logBuffer }

// Accept implements testcontainers.LogConsumer.
func (l logConsumer) Accept(entry testcontainers.Log) { _, _ = l.buf.Write(entry.Content) }

// Kind implements Cluster.
func (c *Containers) Kind() string { return "containers" }

// StoreURI implements Cluster.
func (c *Containers) StoreURI() string { return c.storeURI }

// StoreLogs returns what the store container wrote.
func (c *Containers) StoreLogs() string { return c.storeLog.String() }

// StartReplica implements Cluster.
func (c *Containers) StartReplica(ctx context.Context, spec ReplicaSpec) (Replica, error) {
	logs := newLogBuffer()
	uri := fmt.Sprintf("mongodb://%s:27017/?directConnection=true", storeAlias)
	ctr, err := testcontainers.Run(ctx, c.images.Operator,
		testcontainers.WithCmd(spec.args(uri)...),
		tcnetwork.WithNetwork([]string{spec.Name}, c.network),
		testcontainers.WithLogConsumers(logConsumer{logs}),
		testcontainers.WithWaitStrategyAndDeadline(90*time.Second, wait.ForLog(ReadyLine)),
	)
	if err != nil {
		if ctr != nil {
			_ = ctr.Terminate(context.WithoutCancel(ctx))
		}
		return nil, errs.Wrap(errs.Unavailable, err, "replica %s did not get ready: %s", spec.Name, logs.String())
	}
	r := &containerReplica{name: spec.Name, c: c, ctr: ctr, logs: logs}
	c.mu.Lock()
	c.replicas = append(c.replicas, r)
	c.mu.Unlock()
	return r, nil
}

// Close implements Cluster: it removes the replicas, the store and the
// network (not the images).
func (c *Containers) Close(ctx context.Context) error {
	c.mu.Lock()
	replicas := c.replicas
	c.replicas = nil
	c.mu.Unlock()
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	for _, r := range replicas {
		keep(r.Close(ctx))
	}
	if c.store != nil {
		keep(c.store.Terminate(ctx))
	}
	if c.network != nil {
		keep(c.network.Remove(ctx))
	}
	return first
}

// containerReplica is an operator container.
type containerReplica struct {
	name string
	c    *Containers
	ctr  testcontainers.Container
	logs *logBuffer

	mu     sync.Mutex
	closed bool
}

func (r *containerReplica) id() string { return r.ctr.GetContainerID() }

func (r *containerReplica) signal(ctx context.Context, sig string) error {
	_, err := r.c.docker.ContainerKill(ctx, r.id(), client.ContainerKillOptions{Signal: sig})
	return err
}

// Name implements Replica.
func (r *containerReplica) Name() string { return r.name }

// Kill implements Replica.
func (r *containerReplica) Kill(ctx context.Context) error {
	if err := r.signal(ctx, "SIGKILL"); err != nil {
		return err
	}
	return r.waitStopped(ctx, 30*time.Second)
}

func (r *containerReplica) waitStopped(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if r.Exited() {
			return nil
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return errs.New(errs.DeadlineExceeded, "container of %s still runs after %v", r.name, d)
}

// Pause implements Replica.
func (r *containerReplica) Pause(ctx context.Context) error { return r.signal(ctx, "SIGSTOP") }

// Resume implements Replica.
func (r *containerReplica) Resume(ctx context.Context) error { return r.signal(ctx, "SIGCONT") }

// Disconnect implements Replica.
func (r *containerReplica) Disconnect(ctx context.Context) error {
	_, err := r.c.docker.NetworkDisconnect(ctx, r.c.network.ID, client.NetworkDisconnectOptions{Container: r.id(), Force: true})
	return err
}

// Reconnect implements Replica.
func (r *containerReplica) Reconnect(ctx context.Context) error {
	_, err := r.c.docker.NetworkConnect(ctx, r.c.network.ID, client.NetworkConnectOptions{
		Container:      r.id(),
		EndpointConfig: &dockernet.EndpointSettings{Aliases: []string{r.name}},
	})
	return err
}

// Stop implements Replica.
func (r *containerReplica) Stop(ctx context.Context) error {
	grace := 30 * time.Second
	return r.ctr.Stop(ctx, &grace)
}

// Exited implements Replica.
func (r *containerReplica) Exited() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := r.ctr.State(ctx)
	return err == nil && !st.Running
}

// Logs implements Replica.
func (r *containerReplica) Logs() string { return r.logs.String() }

// Close implements Replica: it removes the container.
func (r *containerReplica) Close(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	// No graceful stop: the spec is over, and a replica whose store is
	// gone would take the whole stop timeout.
	_ = r.signal(ctx, "SIGKILL")
	return r.ctr.Terminate(ctx)
}
