package gun

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/ammo"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
	"github.com/capstanhq/capstan/pkg/loadtest/files"
)

// DefaultTimeout bounds a request when the spec sets no timeout.
const DefaultTimeout = 10 * time.Second

// httpTarget is the parsed target shared by the HTTP and scenario guns.
type httpTarget struct {
	base           *url.URL // scheme://host[:port][/prefix]
	dialAddr       string   // host:port
	hostHeader     string
	prefix         string // path prefix without trailing slash
	timeout        time.Duration
	connectTimeout time.Duration
	headers        ammo.Headers
}

func parseHTTPTarget(spec *config.GunSpec) (*httpTarget, error) {
	if spec.Target == "" {
		return nil, errs.Invalid("target", "required, for example http://127.0.0.1:8080")
	}
	u, err := url.Parse(spec.Target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, errs.Invalid("target", "want http(s)://host[:port][/prefix], got %q", spec.Target)
	}
	t := &httpTarget{base: u, hostHeader: u.Host, prefix: strings.TrimSuffix(u.EscapedPath(), "/"), headers: spec.Headers}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	t.dialAddr = net.JoinHostPort(u.Hostname(), port)
	t.timeout = spec.Timeout.D()
	if t.timeout < 0 {
		return nil, errs.Invalid("timeout", "must not be negative")
	}
	if t.timeout == 0 {
		t.timeout = DefaultTimeout
	}
	t.connectTimeout = spec.ConnectTimeout.D()
	if t.connectTimeout < 0 {
		return nil, errs.Invalid("connectTimeout", "must not be negative")
	}
	if t.connectTimeout == 0 {
		t.connectTimeout = t.timeout
	}
	for i, h := range spec.Headers {
		if h.Name == "" || strings.ContainsAny(h.Name, ": \r\n") || strings.ContainsAny(h.Value, "\r\n") {
			return nil, errs.Invalid("headers["+strconv.Itoa(i)+"]", "bad header %q", h.Name)
		}
	}
	return t, nil
}

// splitURI returns the host (empty for a path) and the path of an ammo URI
// without allocating.
func splitURI(uri string) (host, path string) {
	rest := uri
	switch {
	case strings.HasPrefix(rest, "http://"):
		rest = rest[7:]
	case strings.HasPrefix(rest, "https://"):
		rest = rest[8:]
	default:
		return "", uri
	}
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return rest, "/"
	}
	return rest[:i], rest[i:]
}

// url returns the absolute URL of an ammo URI (for net/http).
func (t *httpTarget) url(uri string) string {
	if strings.HasPrefix(uri, "http://") || strings.HasPrefix(uri, "https://") {
		return uri
	}
	return t.base.Scheme + "://" + t.base.Host + t.prefix + uri
}

func rejectFields(spec *config.GunSpec, gunType string, fields map[string]bool) error {
	for name, set := range fields {
		if set {
			return errs.Invalid(name, "not used by the %s gun", gunType)
		}
	}
	return nil
}

func tlsConfig(spec *config.TLSSpec, fsys files.FS) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if spec == nil {
		return c, nil
	}
	c.ServerName = spec.ServerName
	c.InsecureSkipVerify = spec.InsecureSkipVerify
	if spec.CAFile != "" {
		pem, err := files.ReadFile(fsys, spec.CAFile)
		if err != nil {
			return nil, errs.Field(errs.InvalidArgument, "tls.caFile", "%v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errs.Invalid("tls.caFile", "no PEM certificates in %s", spec.CAFile)
		}
		c.RootCAs = pool
	}
	if (spec.CertFile == "") != (spec.KeyFile == "") {
		return nil, errs.Invalid("tls.certFile", "certFile and keyFile go together")
	}
	if spec.CertFile != "" {
		certPEM, err := files.ReadFile(fsys, spec.CertFile)
		if err != nil {
			return nil, errs.Field(errs.InvalidArgument, "tls.certFile", "%v", err)
		}
		keyPEM, err := files.ReadFile(fsys, spec.KeyFile)
		if err != nil {
			return nil, errs.Field(errs.InvalidArgument, "tls.keyFile", "%v", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, errs.Field(errs.InvalidArgument, "tls.certFile", "%v", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// NewHTTP is the constructor of the http gun.
func NewHTTP(_ context.Context, spec *config.GunSpec, fsys files.FS) (Factory, error) {
	if err := rejectFields(spec, "http", map[string]bool{
		"descriptorSet": spec.DescriptorSet != "", "steps": len(spec.Steps) > 0, "options": len(spec.Options) > 0,
	}); err != nil {
		return nil, err
	}
	t, err := parseHTTPTarget(spec)
	if err != nil {
		return nil, err
	}
	tlsOn := t.base.Scheme == "https"
	switch {
	case spec.H2C && tlsOn:
		return nil, errs.Invalid("h2c", "h2c is HTTP/2 without TLS; use http2 with an https target")
	case spec.HTTP2 && !tlsOn:
		return nil, errs.Invalid("http2", "HTTP/2 over TLS needs an https target; use h2c for plain http")
	case spec.TLS != nil && !tlsOn:
		return nil, errs.Invalid("tls", "TLS settings need an https target")
	}
	lean := !tlsOn && !spec.H2C
	switch spec.Client {
	case "", "lean":
		if spec.Client == "lean" && !lean {
			return nil, errs.Invalid("client", "the lean client speaks plain HTTP/1.1 only")
		}
	case "std":
		lean = false
	default:
		return nil, errs.Invalid("client", "unknown client %q (want lean or std)", spec.Client)
	}
	if lean {
		f := &leanFactory{t: t}
		for _, h := range t.headers {
			f.headerBytes = append(f.headerBytes, h.Name...)
			f.headerBytes = append(f.headerBytes, ": "...)
			f.headerBytes = append(f.headerBytes, h.Value...)
			f.headerBytes = append(f.headerBytes, "\r\n"...)
		}
		return f, nil
	}
	tc, err := tlsConfig(spec.TLS, fsys)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: t.connectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: t.connectTimeout,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: 1 << 16,
		DisableCompression:  true,
		IdleConnTimeout:     90 * time.Second,
	}
	var p http.Protocols
	switch {
	case spec.H2C:
		p.SetUnencryptedHTTP2(true)
	case spec.HTTP2:
		p.SetHTTP2(true)
	default:
		p.SetHTTP1(true)
	}
	tr.Protocols = &p
	return &stdFactory{t: t, client: &http.Client{Transport: tr, Timeout: t.timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}, nil
}

// stdFactory makes net/http guns sharing one transport.
type stdFactory struct {
	t      *httpTarget
	client *http.Client
}

func (f *stdFactory) New(_ context.Context, env Env) (Gun, error) {
	return &stdGun{f: f, phases: env.Phases}, nil
}

func (f *stdFactory) Close() error {
	f.client.CloseIdleConnections()
	return nil
}

type stdGun struct {
	f      *stdFactory
	phases bool
}

func (g *stdGun) Close() error { return nil }

func (g *stdGun) Shoot(ctx context.Context, s *Shot) {
	r, err := doStd(ctx, g.f.client, g.f.t, stdRequest{method: s.Ammo.Method, uri: s.Ammo.URI, host: s.Ammo.Host,
		headers: s.Ammo.Headers, body: s.Ammo.Body, phases: g.phases})
	s.BytesIn, s.BytesOut = r.in, r.out
	s.Connect, s.Send, s.Receive = r.connect, r.send, r.receive
	if err != nil {
		s.Fail(err)
		return
	}
	s.Proto, s.Code = aggregate.HTTP, int32(r.code)
	if r.code >= 400 {
		s.Class = aggregate.Status
	}
}

// stdRequest is one request for doStd.
type stdRequest struct {
	method, uri, host string
	headers           ammo.Headers
	body              string
	// keep receives the response body when not nil; otherwise it is
	// discarded.
	keep *bytes.Buffer
	// phases times the request's phases (which allocates).
	phases bool
}

// stdResult is what doStd saw: the status, the response headers, the
// bytes received and sent (body sizes) and, if asked for, the phases.
type stdResult struct {
	code                   int
	header                 http.Header
	in, out                int64
	connect, send, receive int64
}

// doStd makes one request with net/http. It returns what it saw and a
// transport error.
func doStd(ctx context.Context, c *http.Client, t *httpTarget, q stdRequest) (stdResult, error) {
	r := stdResult{out: int64(len(q.body))}
	method := q.method
	if method == "" {
		method = http.MethodGet
	}
	var rd io.Reader
	if q.body != "" {
		rd = strings.NewReader(q.body)
	}
	var pt *phaseTrace
	rctx := ctx
	if q.phases {
		rctx, pt = withPhaseTrace(ctx)
	}
	req, err := http.NewRequestWithContext(rctx, method, t.url(q.uri), rd)
	if err != nil {
		return stdResult{}, err
	}
	for _, h := range t.headers {
		req.Header.Add(h.Name, h.Value)
	}
	for _, h := range q.headers {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	if q.host != "" {
		req.Host = q.host
	}
	resp, err := c.Do(req)
	if err != nil {
		if pt != nil {
			r.connect, r.send, r.receive = pt.phases()
		}
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return r, err
	}
	r.code, r.header = resp.StatusCode, resp.Header
	if q.keep != nil {
		r.in, err = q.keep.ReadFrom(resp.Body)
	} else {
		r.in, err = io.Copy(io.Discard, resp.Body)
	}
	resp.Body.Close()
	if pt != nil {
		r.connect, r.send, r.receive = pt.phases()
	}
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return r, err
}

// leanFactory makes lean HTTP/1.1 guns: one keep-alive connection each.
type leanFactory struct {
	t           *httpTarget
	headerBytes []byte
}

func (f *leanFactory) New(context.Context, Env) (Gun, error) {
	return &leanGun{f: f, wbuf: make([]byte, 0, 1024)}, nil
}

func (f *leanFactory) Close() error { return nil }

// errProtocol marks a response the lean client cannot parse.
var errProtocol = errors.New("malformed HTTP response")

// leanGun is a minimal HTTP/1.1 client over one keep-alive connection. It
// writes the request from a reused buffer and parses the status line,
// Content-Length, Transfer-Encoding: chunked and Connection headers,
// discarding the body, so a request costs no allocation.
type leanGun struct {
	f    *leanFactory
	wbuf []byte
	br   *bufio.Reader

	mu       sync.Mutex // guards conn against abort
	conn     net.Conn
	reused   bool
	watched  <-chan struct{} // Done channel of the watched context
	unwatch  func() bool
	aborting chan struct{} // closed when the abort function has run
	aborted  atomic.Bool
}

func (g *leanGun) Close() error {
	if g.unwatch != nil {
		g.unwatch()
	}
	g.closeConn()
	return nil
}

func (g *leanGun) closeConn() {
	g.mu.Lock()
	if g.conn != nil {
		g.conn.Close()
		g.conn = nil
	}
	g.mu.Unlock()
}

// watch arranges for ctx's end to interrupt the connection. It registers
// once per context (told apart by their Done channels), not per shot.
func (g *leanGun) watch(ctx context.Context) {
	done := ctx.Done()
	if done == g.watched {
		return
	}
	if g.unwatch != nil {
		// If the abort has started, let it finish before the connection
		// is used again: it runs in its own goroutine.
		if !g.unwatch() {
			<-g.aborting
		}
		g.unwatch = nil
	}
	g.watched = done
	g.aborted.Store(false)
	if done == nil {
		return
	}
	finished := make(chan struct{})
	g.aborting = finished
	g.unwatch = context.AfterFunc(ctx, func() {
		defer close(finished)
		g.aborted.Store(true)
		g.mu.Lock()
		if g.conn != nil {
			g.conn.SetDeadline(time.Unix(1, 0))
		}
		g.mu.Unlock()
	})
}

func (g *leanGun) dial(ctx context.Context) error {
	d := net.Dialer{Timeout: g.f.t.connectTimeout}
	c, err := d.DialContext(ctx, "tcp", g.f.t.dialAddr)
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.conn = c
	if g.aborted.Load() {
		c.SetDeadline(time.Unix(1, 0))
	}
	g.mu.Unlock()
	if g.br == nil {
		g.br = bufio.NewReaderSize(c, 16<<10)
	} else {
		g.br.Reset(c)
	}
	g.reused = false
	return nil
}

func (g *leanGun) Shoot(ctx context.Context, s *Shot) {
	if err := ctx.Err(); err != nil {
		s.Fail(err)
		return
	}
	g.watch(ctx)
	a := s.Ammo
	g.wbuf = g.f.appendRequest(g.wbuf[:0], a)
	s.BytesOut = int64(len(g.wbuf))
	head := a.Method == "HEAD"
	for attempt := 0; ; attempt++ {
		// The phases come from the monotonic clock (time.Now reads it
		// without a system call): connect is the dial, send the write,
		// receive from the first byte of the response to its end. A retry
		// on a new connection measures the phases afresh.
		s.Connect, s.Send, s.Receive = 0, 0, 0
		var start time.Time
		if g.conn == nil {
			dialed := time.Now()
			err := g.dial(ctx)
			start = time.Now()
			s.Connect = int64(start.Sub(dialed))
			if err != nil {
				g.fail(ctx, s, err)
				return
			}
		} else {
			start = time.Now()
		}
		reused := g.reused
		g.conn.SetDeadline(start.Add(g.f.t.timeout))
		if g.aborted.Load() {
			// Canceled between the check above and the deadline.
			g.fail(ctx, s, context.Canceled)
			return
		}
		_, err := g.conn.Write(g.wbuf)
		wrote := time.Now()
		s.Send = int64(wrote.Sub(start))
		var code int
		var in int64
		keep := false
		if err == nil {
			// Peek fills the buffer with what the first read brings,
			// as reading the status line would: no extra system call.
			if _, err = g.br.Peek(1); err != nil {
				err = readErr(err)
			} else {
				first := time.Now()
				code, in, keep, err = g.readResponse(head)
				s.Receive = int64(time.Since(first))
			}
		}
		s.BytesIn = in
		if code > 0 {
			s.Proto, s.Code = aggregate.HTTP, int32(code)
		}
		if err != nil {
			// A kept-alive connection the server closed while idle fails
			// before any byte of the response: retry once on a new one.
			if reused && in == 0 && attempt == 0 && ctx.Err() == nil && isStale(err) {
				g.closeConn()
				continue
			}
			g.fail(ctx, s, err)
			return
		}
		if code >= 400 {
			s.Class = aggregate.Status
		}
		if keep {
			g.reused = true
		} else {
			g.closeConn()
		}
		return
	}
}

func isStale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func (g *leanGun) fail(ctx context.Context, s *Shot, err error) {
	g.closeConn()
	if cerr := ctx.Err(); cerr != nil {
		err = cerr
	}
	if errors.Is(err, errProtocol) {
		s.Err, s.Class = err, aggregate.Protocol
		return
	}
	s.Fail(err)
}

// appendRequest renders a's request onto b.
func (f *leanFactory) appendRequest(b []byte, a *ammo.Ammo) []byte {
	method := a.Method
	if method == "" {
		method = "GET"
	}
	host, path := splitURI(a.URI)
	b = append(b, method...)
	b = append(b, ' ')
	if host == "" {
		b = append(b, f.t.prefix...)
	}
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	switch {
	case a.Host != "":
		b = append(b, a.Host...)
	case host != "":
		b = append(b, host...)
	default:
		b = append(b, f.t.hostHeader...)
	}
	b = append(b, "\r\n"...)
	b = append(b, f.headerBytes...)
	for _, h := range a.Headers {
		if strings.EqualFold(h.Name, "Host") || strings.EqualFold(h.Name, "Content-Length") {
			continue
		}
		b = append(b, h.Name...)
		b = append(b, ": "...)
		b = append(b, h.Value...)
		b = append(b, "\r\n"...)
	}
	if len(a.Body) > 0 || method == "POST" || method == "PUT" || method == "PATCH" {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(len(a.Body)), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	return append(b, a.Body...)
}

// readResponse reads one response, discarding its body. keep reports
// whether the connection may carry another request.
func (g *leanGun) readResponse(head bool) (code int, n int64, keep bool, err error) {
	br := g.br
	for {
		line, err := br.ReadSlice('\n')
		n += int64(len(line))
		if err != nil {
			return 0, n, false, readErr(err)
		}
		if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
			return 0, n, false, errProtocol
		}
		code = 0
		for _, c := range line[9:12] {
			if c < '0' || c > '9' {
				return 0, n, false, errProtocol
			}
			code = code*10 + int(c-'0')
		}
		keep = line[7] == '1'
		contentLength := int64(-1)
		chunked := false
		for {
			line, err = br.ReadSlice('\n')
			n += int64(len(line))
			if err != nil {
				return code, n, false, readErr(err)
			}
			if len(line) <= 2 && (line[0] == '\r' || line[0] == '\n') {
				break
			}
			colon := bytes.IndexByte(line, ':')
			if colon <= 0 {
				return code, n, false, errProtocol
			}
			name, val := line[:colon], bytes.TrimSpace(line[colon+1:])
			switch {
			case len(name) == 14 && asciiEqualFold(name, "Content-Length"):
				v, ok := parseUint(val)
				if !ok {
					return code, n, false, errProtocol
				}
				contentLength = v
			case len(name) == 17 && asciiEqualFold(name, "Transfer-Encoding"):
				chunked = len(val) >= 7 && asciiEqualFold(val[len(val)-7:], "chunked")
			case len(name) == 10 && asciiEqualFold(name, "Connection"):
				if asciiEqualFold(val, "close") {
					keep = false
				} else if asciiEqualFold(val, "keep-alive") {
					keep = true
				}
			}
		}
		if code >= 100 && code < 200 && code != 101 {
			continue // informational: the real response follows
		}
		switch {
		case head || code == 204 || code == 304 || code == 101:
		case chunked:
			m, err := readChunked(br)
			n += m
			if err != nil {
				return code, n, false, err
			}
		case contentLength >= 0:
			m, err := br.Discard(int(contentLength))
			n += int64(m)
			if err != nil {
				return code, n, false, readErr(err)
			}
		default:
			m, err := io.Copy(io.Discard, br)
			n += m
			return code, n, false, err
		}
		return code, n, keep, nil
	}
}

func readErr(err error) error {
	if errors.Is(err, bufio.ErrBufferFull) {
		return errProtocol
	}
	if errors.Is(err, io.EOF) {
		return io.EOF
	}
	return err
}

func readChunked(br *bufio.Reader) (int64, error) {
	var n int64
	for {
		line, err := br.ReadSlice('\n')
		n += int64(len(line))
		if err != nil {
			return n, readErr(err)
		}
		size := int64(0)
		digits := 0
		for _, c := range line {
			var d byte
			switch {
			case c >= '0' && c <= '9':
				d = c - '0'
			case c >= 'a' && c <= 'f':
				d = c - 'a' + 10
			case c >= 'A' && c <= 'F':
				d = c - 'A' + 10
			default:
				goto done
			}
			size = size*16 + int64(d)
			digits++
			if digits > 15 {
				return n, errProtocol
			}
		}
	done:
		if digits == 0 {
			return n, errProtocol
		}
		if size == 0 {
			// Trailers until an empty line.
			for {
				line, err := br.ReadSlice('\n')
				n += int64(len(line))
				if err != nil {
					return n, readErr(err)
				}
				if len(line) <= 2 && (line[0] == '\r' || line[0] == '\n') {
					return n, nil
				}
			}
		}
		m, err := br.Discard(int(size))
		n += int64(m)
		if err != nil {
			return n, readErr(err)
		}
		line, err = br.ReadSlice('\n')
		n += int64(len(line))
		if err != nil {
			return n, readErr(err)
		}
		if len(bytes.TrimSpace(line)) != 0 {
			return n, errProtocol
		}
	}
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c, d := b[i], s[i]
		if c|0x20 != d|0x20 {
			return false
		}
	}
	return true
}

func parseUint(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}
