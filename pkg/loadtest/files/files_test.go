package files

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tree makes dir/in (with in/a.txt, in/sub/b.txt and links) and
// dir/secret.txt outside it, and returns in.
func tree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(in, "sub"), 0o755))
	must(os.WriteFile(filepath.Join(in, "a.txt"), []byte("a"), 0o644))
	must(os.WriteFile(filepath.Join(in, "sub", "b.txt"), []byte("b"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "secret.txt"), []byte("secret"), 0o644))
	must(os.Symlink("sub/b.txt", filepath.Join(in, "inside-link")))
	must(os.Symlink("../secret.txt", filepath.Join(in, "relative-out")))
	must(os.Symlink(filepath.Join(dir, "secret.txt"), filepath.Join(in, "absolute-out")))
	must(os.Symlink("..", filepath.Join(in, "up")))
	return in
}

func TestDir(t *testing.T) {
	in := tree(t)
	if b, err := ReadFile(Dir(in), "sub/b.txt"); err != nil || string(b) != "b" {
		t.Fatalf("relative: %q %v", b, err)
	}
	// Dir opens what it is told: absolute paths and "..".
	if b, err := ReadFile(Dir(in), "../secret.txt"); err != nil || string(b) != "secret" {
		t.Fatalf("dot-dot: %q %v", b, err)
	}
	if b, err := ReadFile(Dir("/elsewhere"), filepath.Join(in, "a.txt")); err != nil || string(b) != "a" {
		t.Fatalf("absolute: %q %v", b, err)
	}
	if b, err := ReadFile(nil, filepath.Join(in, "a.txt")); err != nil || string(b) != "a" {
		t.Fatalf("nil FS: %q %v", b, err)
	}
}

func TestRoot(t *testing.T) {
	in := tree(t)
	r, err := OpenRoot(in)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for name, want := range map[string]string{"a.txt": "a", "sub/b.txt": "b", "inside-link": "b", "sub/../a.txt": "a"} {
		if b, err := ReadFile(r, name); err != nil || string(b) != want {
			t.Errorf("%s: %q %v", name, b, err)
		}
		if err := r.Check(name); err != nil {
			t.Errorf("check %s: %v", name, err)
		}
	}
	for name, want := range map[string]string{
		filepath.Join(in, "a.txt"): "is absolute",
		"../secret.txt":            "leaves the files directory",
		"sub/../../secret.txt":     "leaves the files directory",
		"relative-out":             "leads out of the files directory through a symbolic link",
		"absolute-out":             "leads out of the files directory through a symbolic link",
		"up/secret.txt":            "leads out of the files directory through a symbolic link",
		"":                         "empty file name",
	} {
		f, err := r.Open(name)
		if err == nil {
			b, _ := io.ReadAll(f)
			f.Close()
			t.Errorf("%q opened: %q", name, b)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", name, err, want)
		}
		if cerr := r.Check(name); cerr == nil || cerr.Error() != err.Error() {
			t.Errorf("check %q: %v, want %v", name, cerr, err)
		}
	}
	// A missing file is not the check's business; opening it fails.
	if err := r.Check("missing.txt"); err != nil {
		t.Errorf("check missing: %v", err)
	}
	if _, err := r.Open("missing.txt"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("open missing: %v", err)
	}
	if _, err := OpenRoot(filepath.Join(in, "nope")); err == nil {
		t.Error("a missing directory opened")
	}
}
