package ammo

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/files"
)

func TestJSONLines(t *testing.T) {
	in := `# comment
{"tag":"a","method":"POST","uri":"/x?y=1","host":"h","headers":{"B":"2","A":"1"},"body":"{}"}

{"call":"pkg.S/M","payload":{"k":1},"metadata":{"x":"y"}}
{"vars":{"id":"7"}}`
	got, err := Load(strings.NewReader(in), JSONLines)
	if err != nil {
		t.Fatal(err)
	}
	want := []Ammo{
		{Tag: "a", Method: "POST", URI: "/x?y=1", Host: "h", Headers: Headers{{"B", "2"}, {"A", "1"}}, Body: "{}"},
		{Call: "pkg.S/M", Payload: []byte(`{"k":1}`), Metadata: Headers{{"x", "y"}}},
		{Vars: map[string]string{"id": "7"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v\nwant %#v", got, want)
	}
}

func TestJSONLinesErrorsNameTheLine(t *testing.T) {
	cases := map[string]string{
		"{\"uri\":\"/\"}\n{\"uri\":\"/\",\"bogus\":1}\n":   "line 2",
		"\n\n{\"uri\":\"/a b\"}":                           "line 3",
		"{\"method\":\"GET\"}":                             "line 1",
		"{\"uri\":\"/\",\"headers\":{\"A\":1}}":            "line 1",
		"{\"uri\":\"/\",\"headers\":{\"A\\r\\nB\":\"x\"}}": "line 1",
		"{\"uri\":\"/\"} {\"uri\":\"/\"}":                  "line 1",
		"[1,2]":                                            "line 1",
	}
	for in, field := range cases {
		_, err := Load(strings.NewReader(in), JSONLines)
		if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != field {
			t.Errorf("%q: err %v, want InvalidArgument on %q", in, err, field)
		}
	}
}

func TestURIFormat(t *testing.T) {
	in := `[Host: example.org]
[Connection: keep-alive]
/one tag1
/two
[Connection:]
[X-A: b]
http://127.0.0.1:1/three  tag3
`
	got, err := Load(strings.NewReader(in), URI)
	if err != nil {
		t.Fatal(err)
	}
	want := []Ammo{
		{Method: "GET", URI: "/one", Tag: "tag1", Host: "example.org", Headers: Headers{{"Connection", "keep-alive"}}},
		{Method: "GET", URI: "/two", Host: "example.org", Headers: Headers{{"Connection", "keep-alive"}}},
		{Method: "GET", URI: "http://127.0.0.1:1/three", Tag: "tag3", Host: "example.org", Headers: Headers{{"X-A", "b"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v\nwant %#v", got, want)
	}
	for in, field := range map[string]string{
		"/a\n[Host example]\n": "line 2",
		"[Host: x\n":           "line 1",
		"relative/path\n":      "line 1",
		"[: v]\n":              "line 1",
	} {
		_, err := Load(strings.NewReader(in), URI)
		if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != field {
			t.Errorf("%q: err %v, want InvalidArgument on %q", in, err, field)
		}
	}
}

func TestMemoryPassesAndLimit(t *testing.T) {
	list := []Ammo{{URI: "/a"}, {URI: "/b"}, {URI: "/c"}}
	cases := []struct {
		lim  Limits
		want int
	}{
		{Limits{Passes: 2}, 6},
		{Limits{Limit: 4}, 4},
		{Limits{Passes: 1, Limit: 10}, 3},
		{Limits{Passes: 5, Limit: 7}, 7},
	}
	for _, c := range cases {
		m, err := NewMemory(list, c.lim)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for {
			a, err := m.Acquire(context.Background())
			if errors.Is(err, ErrEnd) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, a.URI)
			m.Release(a)
		}
		if len(got) != c.want || int64(c.want) != m.Len() {
			t.Errorf("%+v: got %d ammo (Len %d), want %d", c.lim, len(got), m.Len(), c.want)
		}
		for i, u := range got {
			if u != list[i%3].URI {
				t.Fatalf("%+v: ammo %d is %s", c.lim, i, u)
			}
		}
	}
}

func TestMemoryConcurrentExactCount(t *testing.T) {
	m, _ := NewMemory([]Ammo{{URI: "/"}}, Limits{Limit: 10000})
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for {
				if _, err := m.Acquire(context.Background()); err != nil {
					break
				}
				n++
			}
			mu.Lock()
			total += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	if total != 10000 {
		t.Fatalf("handed out %d, want 10000", total)
	}
}

func TestMemoryAcquireDoesNotAllocate(t *testing.T) {
	m, _ := NewMemory([]Ammo{{URI: "/"}}, Limits{})
	ctx := context.Background()
	if n := testing.AllocsPerRun(1000, func() {
		a, _ := m.Acquire(ctx)
		m.Release(a)
	}); n != 0 {
		t.Fatalf("%v allocations per Acquire", n)
	}
}

func TestStream(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ammo.jsonl")
	os.WriteFile(path, []byte("{\"uri\":\"/1\"}\n{\"uri\":\"/2\",\"tag\":\"t\"}\n"), 0o644)
	s, err := NewStream(path, JSONLines, Limits{Passes: 3, Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []string
	for {
		a, err := s.Acquire(context.Background())
		if errors.Is(err, ErrEnd) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a.URI+a.Tag)
		s.Release(a) // pooled: the next Acquire may reuse it, reset
	}
	if want := []string{"/1", "/2t", "/1", "/2t", "/1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}

	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte("{\"uri\":\"/1\"}\nnot json\n"), 0o644)
	s2, _ := NewStream(bad, JSONLines, Limits{})
	defer s2.Close()
	s2.Acquire(context.Background())
	if _, err := s2.Acquire(context.Background()); !errs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("bad line: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled acquire: %v", err)
	}
}

func TestSpecValidateAndOpen(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.uri"), []byte("/x\n/y\n"), 0o644)
	p, closeFn, err := Open(&Spec{Type: "file", File: "a.uri", Format: URI, Passes: 1}, files.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	n := 0
	for {
		if _, err := p.Acquire(context.Background()); err != nil {
			break
		}
		n++
	}
	if n != 2 {
		t.Fatalf("one pass over two lines gave %d", n)
	}
	for _, c := range []struct {
		spec  Spec
		field string
	}{
		{Spec{}, "type"},
		{Spec{Type: "ftp"}, "type"},
		{Spec{Type: "inline"}, "requests"},
		{Spec{Type: "inline", Requests: []Ammo{{URI: "/"}, {}}}, "requests[1]"},
		{Spec{Type: "file"}, "file"},
		{Spec{Type: "file", File: "x", Format: "csv"}, "format"},
		{Spec{Type: "inline", Requests: []Ammo{{URI: "/"}}, Passes: -1}, "passes"},
		{Spec{Type: "inline", Requests: []Ammo{{URI: "/"}}, Limit: -1}, "limit"},
	} {
		err := c.spec.Validate()
		if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != c.field {
			t.Errorf("%+v: err %v, want InvalidArgument on %q", c.spec, err, c.field)
		}
	}
	if _, _, err := Open(&Spec{Type: "file", File: "missing"}, files.Dir(dir)); !errs.IsInvalidArgument(err) {
		t.Fatalf("missing file: %v", err)
	}
}

var _ io.Closer = (*Stream)(nil)
