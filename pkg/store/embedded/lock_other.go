//go:build !unix

package embedded

import (
	"os"
	"path/filepath"
)

// lockDir opens dir's lock file. Without flock, a second server on the same
// directory is not detected on this platform.
func lockDir(dir string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, "capstan.lock"), os.O_CREATE|os.O_RDWR, 0o600)
}

// unlockDir releases a lock taken by lockDir.
func unlockDir(f *os.File) { _ = f.Close() }
