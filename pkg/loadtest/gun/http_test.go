package gun

import (
	"bufio"
	"context"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capstanhq/capstan/internal/loadtesttest"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/ammo"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
	"github.com/capstanhq/capstan/pkg/loadtest/files"
)

func newGun(t testing.TB, spec config.GunSpec) Gun {
	t.Helper()
	f, err := NewRegistry().Build(context.Background(), &spec, files.Dir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	g, err := f.New(context.Background(), Env{Now: func() int64 { return 0 }, Report: func(aggregate.Sample) {}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func shoot(g Gun, a *ammo.Ammo) *Shot {
	s := &Shot{Ammo: a}
	g.Shoot(context.Background(), s)
	return s
}

// countingServer is an httptest server that counts new connections.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func TestLeanRequestAndResponses(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.Method+" "+r.Host+" "+r.URL.RequestURI()+" "+r.Header.Get("X-Gun")+" "+r.Header.Get("X-Ammo")+" "+string(body))
		mu.Unlock()
		switch r.URL.Path {
		case "/api/chunked":
			w.Write([]byte("part1"))
			w.(http.Flusher).Flush()
			w.Write([]byte("part2"))
		case "/api/fail":
			w.WriteHeader(503)
			w.Write([]byte("no"))
		case "/api/empty":
			w.WriteHeader(204)
		case "/api/close":
			w.Header().Set("Connection", "close")
			w.Write([]byte("bye"))
		default:
			w.Write([]byte("hello"))
		}
	})
	g := newGun(t, config.GunSpec{Type: "http", Target: srv.URL + "/api/", Headers: ammo.Headers{{Name: "X-Gun", Value: "g"}}})
	cases := []struct {
		a     ammo.Ammo
		code  int32
		class aggregate.Class
		in    int64 // minimum bytes in
	}{
		{ammo.Ammo{URI: "/x?q=1", Headers: ammo.Headers{{Name: "X-Ammo", Value: "a"}}}, 200, aggregate.OK, 5},
		{ammo.Ammo{URI: "/chunked"}, 200, aggregate.OK, 10},
		{ammo.Ammo{Method: "POST", URI: "/post", Body: "payload", Host: "example.test"}, 200, aggregate.OK, 5},
		{ammo.Ammo{URI: "/fail"}, 503, aggregate.Status, 2},
		{ammo.Ammo{URI: "/empty"}, 204, aggregate.OK, 1},
		{ammo.Ammo{Method: "HEAD", URI: "/head"}, 200, aggregate.OK, 1},
		{ammo.Ammo{URI: "/x"}, 200, aggregate.OK, 5},
	}
	for _, c := range cases {
		s := shoot(g, &c.a)
		if s.Code != c.code || s.Class != c.class || s.Proto != aggregate.HTTP || s.BytesIn < c.in || s.BytesOut == 0 {
			t.Fatalf("%s %s: code %d class %s in %d out %d err %v", c.a.Method, c.a.URI, s.Code, s.Class, s.BytesIn, s.BytesOut, s.Err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for %d keep-alive requests, want 1", n, len(cases))
	}
	if s := shoot(g, &ammo.Ammo{URI: "/close"}); s.Class != aggregate.OK {
		t.Fatalf("close: %v", s.Err)
	}
	if s := shoot(g, &ammo.Ammo{URI: "/x"}); s.Class != aggregate.OK || conns.Load() != 2 {
		t.Fatalf("after Connection: close: class %s, %d conns", s.Class, conns.Load())
	}
	host := strings.TrimPrefix(srv.URL, "http://")
	want := []string{
		"GET " + host + " /api/x?q=1 g a ",
		"GET " + host + " /api/chunked g  ",
		"POST example.test /api/post g  payload",
	}
	for i, w := range want {
		if seen[i] != w {
			t.Errorf("request %d: %q, want %q", i, seen[i], w)
		}
	}
}

func TestLeanRawResponses(t *testing.T) {
	cases := []struct {
		name  string
		resp  string
		code  int32
		class aggregate.Class
	}{
		{"continue then ok", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, aggregate.OK},
		{"until eof", "HTTP/1.0 200 OK\r\n\r\nstream until close", 200, aggregate.OK},
		{"chunked trailers", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nA;ext=1\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n", 200, aggregate.OK},
		{"garbage", "SMTP ready\r\n\r\n", 0, aggregate.Protocol},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 200, aggregate.Protocol},
		{"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 200, aggregate.Protocol},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 200, aggregate.Conn},
	}
	for _, c := range cases {
		url := loadtesttest.RawServer(t, func(br *bufio.Reader, conn net.Conn) {
			if loadtesttest.ReadRequest(br) {
				io.WriteString(conn, c.resp)
			}
		})
		g := newGun(t, config.GunSpec{Type: "http", Target: url})
		s := shoot(g, &ammo.Ammo{URI: "/"})
		if s.Code != c.code || s.Class != c.class {
			t.Errorf("%s: code %d class %s err %v", c.name, s.Code, s.Class, s.Err)
		}
	}
}

// TestLeanRetriesStaleConnection: a server that closes each connection
// after one response without saying so; the next request on the dead
// connection is retried once on a new one.
func TestLeanRetriesStaleConnection(t *testing.T) {
	var conns atomic.Int64
	url := loadtesttest.RawServer(t, func(br *bufio.Reader, conn net.Conn) {
		conns.Add(1)
		if loadtesttest.ReadRequest(br) {
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		}
	})
	g := newGun(t, config.GunSpec{Type: "http", Target: url})
	for i := 0; i < 3; i++ {
		if s := shoot(g, &ammo.Ammo{URI: "/"}); s.Class != aggregate.OK {
			t.Fatalf("shot %d: %s %v", i, s.Class, s.Err)
		}
		time.Sleep(20 * time.Millisecond) // let the close arrive
	}
	if conns.Load() != 3 {
		t.Fatalf("%d connections", conns.Load())
	}
}

func TestLeanTimeoutAndCancel(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	url := loadtesttest.RawServer(t, func(br *bufio.Reader, conn net.Conn) {
		loadtesttest.ReadRequest(br)
		<-release
	})
	g := newGun(t, config.GunSpec{Type: "http", Target: url, Timeout: config.Duration(100 * time.Millisecond)})
	start := time.Now()
	s := shoot(g, &ammo.Ammo{URI: "/"})
	if s.Class != aggregate.Timeout {
		t.Fatalf("stalled server: class %s err %v", s.Class, s.Err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("timeout took %s", time.Since(start))
	}

	g2 := newGun(t, config.GunSpec{Type: "http", Target: url, Timeout: config.Duration(time.Hour)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *Shot)
	go func() {
		s := &Shot{Ammo: &ammo.Ammo{URI: "/"}}
		g2.Shoot(ctx, s)
		done <- s
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case s := <-done:
		if s.Class != aggregate.Canceled {
			t.Fatalf("canceled shot: class %s err %v", s.Class, s.Err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancel did not stop the in-flight request")
	}
	// A canceled context fails fast without touching the network.
	s = &Shot{Ammo: &ammo.Ammo{URI: "/"}}
	g2.Shoot(ctx, s)
	if s.Class != aggregate.Canceled {
		t.Fatalf("shot on a canceled context: %s", s.Class)
	}
}

func TestLeanConnectionRefused(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	g := newGun(t, config.GunSpec{Type: "http", Target: "http://" + addr})
	if s := shoot(g, &ammo.Ammo{URI: "/"}); s.Class != aggregate.Conn || s.Errno == 0 {
		t.Fatalf("refused: class %s errno %d err %v", s.Class, s.Errno, s.Err)
	}
}

// staticServer answers every request head ("\r\n\r\n") on a connection
// with a fixed response, allocating nothing per request, so that
// allocation counts (which are process-wide) measure the client alone.
func staticServer(t testing.TB) string {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	return loadtesttest.RawServer(t, func(_ *bufio.Reader, conn net.Conn) {
		buf := make([]byte, 64<<10)
		tail := 0 // bytes of "\r\n\r\n" matched so far
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			for _, c := range buf[:n] {
				switch {
				case c == '\r' && (tail == 0 || tail == 2):
					tail++
				case c == '\n' && (tail == 1 || tail == 3):
					tail++
				default:
					tail = 0
				}
				if tail == 4 {
					tail = 0
					if _, err := conn.Write(resp); err != nil {
						return
					}
				}
			}
		}
	})
}

func TestLeanShootDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	g := newGun(t, config.GunSpec{Type: "http", Target: staticServer(t), Headers: ammo.Headers{{Name: "A", Value: "b"}}})
	a := &ammo.Ammo{Method: "POST", URI: "/p", Body: "x", Headers: ammo.Headers{{Name: "C", Value: "d"}}}
	ctx := context.Background()
	var s Shot
	shootOnce := func() {
		s.Reset()
		s.Ammo = a
		g.Shoot(ctx, &s)
	}
	shootOnce()
	if n := testing.AllocsPerRun(200, shootOnce); n > 0 {
		t.Fatalf("%v allocations per shot", n)
	}
	if s.Class != aggregate.OK || s.Code != 200 {
		t.Fatal(s.Class, s.Err)
	}
}

func TestH2CAndTLS(t *testing.T) {
	var proto atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proto.Store(int64(r.ProtoMajor))
		w.Write([]byte("hi"))
	})
	h2c := httptest.NewUnstartedServer(h)
	h2c.Config.Protocols = &http.Protocols{}
	h2c.Config.Protocols.SetUnencryptedHTTP2(true)
	h2c.Config.Protocols.SetHTTP1(true)
	h2c.Start()
	defer h2c.Close()
	if s := shoot(newGun(t, config.GunSpec{Type: "http", Target: h2c.URL, H2C: true}), &ammo.Ammo{URI: "/"}); s.Class != aggregate.OK || proto.Load() != 2 {
		t.Fatalf("h2c: class %s proto %d err %v", s.Class, proto.Load(), s.Err)
	}

	tlsSrv := httptest.NewUnstartedServer(h)
	tlsSrv.EnableHTTP2 = true
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	// Verification is on by default: the test server's certificate is not
	// trusted.
	if s := shoot(newGun(t, config.GunSpec{Type: "http", Target: tlsSrv.URL}), &ammo.Ammo{URI: "/"}); s.Class == aggregate.OK {
		t.Fatal("an untrusted certificate was accepted")
	}
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o644)
	spec := config.GunSpec{Type: "http", Target: tlsSrv.URL, HTTP2: true, TLS: &config.TLSSpec{CAFile: ca}}
	if s := shoot(newGun(t, spec), &ammo.Ammo{URI: "/"}); s.Class != aggregate.OK || proto.Load() != 2 {
		t.Fatalf("h2 over TLS with the CA: class %s proto %d err %v", s.Class, proto.Load(), s.Err)
	}
	spec = config.GunSpec{Type: "http", Target: tlsSrv.URL, TLS: &config.TLSSpec{InsecureSkipVerify: true}}
	if s := shoot(newGun(t, spec), &ammo.Ammo{URI: "/"}); s.Class != aggregate.OK || proto.Load() != 1 {
		t.Fatalf("https/1.1 insecure: class %s proto %d err %v", s.Class, proto.Load(), s.Err)
	}
}

func TestHTTPSpecErrors(t *testing.T) {
	cases := []struct {
		spec  config.GunSpec
		field string
	}{
		{config.GunSpec{Type: "http"}, "target"},
		{config.GunSpec{Type: "http", Target: "ftp://x"}, "target"},
		{config.GunSpec{Type: "http", Target: "http://x?a=b"}, "target"},
		{config.GunSpec{Type: "http", Target: "https://x", H2C: true}, "h2c"},
		{config.GunSpec{Type: "http", Target: "http://x", HTTP2: true}, "http2"},
		{config.GunSpec{Type: "http", Target: "http://x", TLS: &config.TLSSpec{}}, "tls"},
		{config.GunSpec{Type: "http", Target: "http://x", Client: "curl"}, "client"},
		{config.GunSpec{Type: "http", Target: "https://x", Client: "lean"}, "client"},
		{config.GunSpec{Type: "http", Target: "http://x", Timeout: -1}, "timeout"},
		{config.GunSpec{Type: "http", Target: "http://x", DescriptorSet: "a"}, "descriptorSet"},
		{config.GunSpec{Type: "http", Target: "http://x", Headers: ammo.Headers{{Name: "A B", Value: "c"}}}, "headers[0]"},
		{config.GunSpec{Type: "http", Target: "https://x", TLS: &config.TLSSpec{CAFile: "missing.pem"}}, "tls.caFile"},
		{config.GunSpec{Type: "http", Target: "https://x", TLS: &config.TLSSpec{CertFile: "a"}}, "tls.certFile"},
		{config.GunSpec{Type: "laser"}, "type"},
	}
	for _, c := range cases {
		_, err := NewRegistry().Build(context.Background(), &c.spec, files.Dir(t.TempDir()))
		if !errs.IsInvalidArgument(err) || errs.FieldOf(err) != c.field {
			t.Errorf("%+v: err %v, want InvalidArgument on %q", c.spec, err, c.field)
		}
	}
}

type fakeFactory struct{}

func (fakeFactory) New(context.Context, Env) (Gun, error) { return nil, errors.New("unused") }
func (fakeFactory) Close() error                          { return nil }

func TestRegistry(t *testing.T) {
	r := NewRegistry()
	c := func(context.Context, *config.GunSpec, files.FS) (Factory, error) { return fakeFactory{}, nil }
	if err := r.Register("custom", c); err != nil {
		t.Fatal(err)
	}
	if err := r.Register("custom", c); !errs.IsAlreadyExists(err) {
		t.Fatalf("second registration: %v", err)
	}
	if err := r.Register("http", c); !errs.IsAlreadyExists(err) {
		t.Fatalf("overriding a built-in: %v", err)
	}
	if _, err := r.Build(context.Background(), &config.GunSpec{Type: "custom"}, nil); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.Types(), ","); got != "custom,grpc,http,scenario" {
		t.Fatalf("types %s", got)
	}
	if _, err := NewRegistry().Build(context.Background(), &config.GunSpec{Type: "custom"}, nil); !errs.IsInvalidArgument(err) {
		t.Fatal("registries share state")
	}
}

// TestLeanAfterCancel: a gun whose context was canceled works again with
// another context, including one that is never canceled.
func TestLeanAfterCancel(t *testing.T) {
	g := newGun(t, config.GunSpec{Type: "http", Target: staticServer(t)})
	ctx, cancel := context.WithCancel(context.Background())
	s := &Shot{Ammo: &ammo.Ammo{URI: "/"}}
	g.Shoot(ctx, s)
	if s.Class != aggregate.OK {
		t.Fatal(s.Err)
	}
	cancel()
	s = &Shot{Ammo: &ammo.Ammo{URI: "/"}}
	g.Shoot(ctx, s)
	if s.Class != aggregate.Canceled {
		t.Fatalf("canceled: %s", s.Class)
	}
	for i := 0; i < 3; i++ {
		s = &Shot{Ammo: &ammo.Ammo{URI: "/"}}
		g.Shoot(context.Background(), s)
		if s.Class != aggregate.OK {
			t.Fatalf("shot %d after cancel: %s %v", i, s.Class, s.Err)
		}
	}
}
