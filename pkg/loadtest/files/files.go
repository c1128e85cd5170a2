package files

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// FS opens the files a spec names.
type FS interface {
	// Open opens the file called name in the spec for reading.
	Open(name string) (io.ReadCloser, error)
}

// ReadFile reads the whole file called name from fsys; a nil fsys is
// Dir(""), which opens names as they are.
func ReadFile(fsys FS, name string) ([]byte, error) {
	if fsys == nil {
		fsys = Dir("")
	}
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// Dir opens relative names against the directory it names and absolute
// names as they are. The empty Dir is the working directory.
type Dir string

// Open implements FS.
func (d Dir) Open(name string) (io.ReadCloser, error) {
	if name != "" && !filepath.IsAbs(name) && d != "" {
		name = filepath.Join(string(d), name)
	}
	return os.Open(name)
}

// Root opens names inside one directory only (with os.Root): absolute
// names, names with ".." that leave the directory and symbolic links that
// lead out of it (or are absolute) are refused. Close it when done.
type Root struct {
	root *os.Root
}

// OpenRoot opens dir as a Root.
func OpenRoot(dir string) (*Root, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &Root{root: r}, nil
}

// Open implements FS.
func (r *Root) Open(name string) (io.ReadCloser, error) {
	if err := CheckLocal(name); err != nil {
		return nil, err
	}
	f, err := r.root.Open(name)
	if err != nil {
		if escapes(err) {
			return nil, escapeError(name)
		}
		return nil, err
	}
	return f, nil
}

// Check returns the error Open would return for a name that leads out of
// the directory (as written, or through a symbolic link), without opening
// the file; any other name, that of a missing file included, is nil.
func (r *Root) Check(name string) error {
	if err := CheckLocal(name); err != nil {
		return err
	}
	if _, err := r.root.Stat(name); err != nil && escapes(err) {
		return escapeError(name)
	}
	return nil
}

// escapes reports whether err is os.Root's refusal of a path that leads
// out of it (its error is not exported).
func escapes(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe) && strings.Contains(pe.Err.Error(), "escapes")
}

func escapeError(name string) error {
	return fmt.Errorf("%q leads out of the files directory through a symbolic link", name)
}

// Close releases the directory.
func (r *Root) Close() error { return r.root.Close() }

// CheckLocal returns an error unless name is a relative path that stays
// inside its directory as written (filepath.IsLocal), what Root requires
// before it follows symbolic links.
func CheckLocal(name string) error {
	switch {
	case name == "":
		return errors.New("empty file name")
	case filepath.IsAbs(name):
		return fmt.Errorf("%q is absolute: want a path relative to the files directory", name)
	case !filepath.IsLocal(name):
		return fmt.Errorf("%q leaves the files directory: want a relative path inside it", name)
	}
	return nil
}
