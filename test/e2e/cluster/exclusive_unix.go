//go:build unix

package cluster

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
)

// Exclusive takes a machine-wide lock (a file lock in the temporary
// directory) so that the end-to-end suites of one machine run one after
// the other: they time leases against one store each and would slow each
// other down. It waits until ctx ends; the returned function releases
// the lock.
func Exclusive(ctx context.Context) (func(), error) {
	path := filepath.Join(os.TempDir(), "capstan-e2e.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if err != syscall.EWOULDBLOCK {
			_ = f.Close()
			return nil, errs.Wrap(errs.Internal, err, "lock %s", path)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, errs.Wrap(errs.DeadlineExceeded, ctx.Err(), "waiting for %s (another end-to-end suite runs)", path)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
