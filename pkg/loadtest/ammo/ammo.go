package ammo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/capstanhq/capstan/pkg/errs"
)

// ErrEnd is returned by Provider.Acquire when the ammo is used up (passes
// or limit reached). It has code OutOfRange.
var ErrEnd = errs.New(errs.OutOfRange, "ammo exhausted")

// Header is one request header or gRPC metadata entry.
type Header struct {
	// Name is the header name as sent.
	Name string
	// Value is the header value.
	Value string
}

// Headers is an ordered list of headers. In JSON it is an object
// ({"Name": "value"}) whose key order is kept.
type Headers []Header

// Get returns the value of the first header named name (case-insensitive).
func (h Headers) Get(name string) (string, bool) {
	for _, x := range h {
		if strings.EqualFold(x.Name, name) {
			return x.Value, true
		}
	}
	return "", false
}

// MarshalJSON encodes h as an object in order.
func (h Headers) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, x := range h {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(x.Name)
		v, _ := json.Marshal(x.Value)
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON decodes an object of string values, keeping key order.
func (h *Headers) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		*h = nil
		return nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("headers must be an object of strings")
	}
	out := (*h)[:0]
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return err
		}
		var v string
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("header %q: value must be a string", kt)
		}
		out = append(out, Header{Name: kt.(string), Value: v})
	}
	if _, err := dec.Token(); err != nil {
		return err
	}
	*h = out
	return nil
}

// Ammo describes one shot. Fields a gun does not use are ignored by it.
type Ammo struct {
	// Tag groups results in reports; empty is the untagged group.
	Tag string `json:"tag,omitempty"`
	// Method is the HTTP method; empty means GET.
	Method string `json:"method,omitempty"`
	// URI is the request target: a path ("/a?b=c") resolved against the
	// gun's target, or an absolute URL.
	URI string `json:"uri,omitempty"`
	// Host overrides the Host header.
	Host string `json:"host,omitempty"`
	// Headers are sent in order after the gun's own headers.
	Headers Headers `json:"headers,omitempty"`
	// Body is the request body.
	Body string `json:"body,omitempty"`
	// Call is a gRPC method as "package.Service/Method".
	Call string `json:"call,omitempty"`
	// Payload is a gRPC request message in protobuf's JSON mapping.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Metadata is gRPC request metadata.
	Metadata Headers `json:"metadata,omitempty"`
	// Vars are variables for a scenario gun's templates.
	Vars map[string]string `json:"vars,omitempty"`
}

func (a *Ammo) reset() {
	hdr, md := a.Headers[:0], a.Metadata[:0]
	*a = Ammo{Headers: hdr, Metadata: md}
}

// Provider hands out ammo to the engine's instances.
//
// Acquire MUST be safe for concurrent use and return ErrEnd (possibly
// wrapped) once the ammo is used up, and ctx's error when ctx ends while it
// waits. The caller MUST NOT modify the returned ammo and MUST call Release
// once the shot is done with it, after which it MUST NOT use it.
type Provider interface {
	// Acquire returns the next ammo.
	Acquire(ctx context.Context) (*Ammo, error)
	// Release returns ammo obtained from Acquire.
	Release(*Ammo)
}

// Limits bound how much ammo a provider hands out.
type Limits struct {
	// Passes is the number of times to go through the ammo; 0 loops
	// forever.
	Passes int64
	// Limit is the total number of ammo handed out; 0 is no limit.
	Limit int64
}

// Memory is a Provider over a slice decoded up front. Acquire never
// allocates and never blocks.
type Memory struct {
	ammo []Ammo
	lim  Limits
	max  int64 // -1 for unbounded
	next atomic.Int64
}

// NewMemory returns a provider that hands out ammo in order within lim.
func NewMemory(ammo []Ammo, lim Limits) (*Memory, error) {
	if len(ammo) == 0 {
		return nil, errs.Invalid("requests", "no ammo")
	}
	if lim.Passes < 0 {
		return nil, errs.Invalid("passes", "must not be negative, got %d", lim.Passes)
	}
	if lim.Limit < 0 {
		return nil, errs.Invalid("limit", "must not be negative, got %d", lim.Limit)
	}
	m := &Memory{ammo: ammo, lim: lim, max: -1}
	if lim.Passes > 0 {
		m.max = lim.Passes * int64(len(ammo))
	}
	if lim.Limit > 0 && (m.max < 0 || lim.Limit < m.max) {
		m.max = lim.Limit
	}
	return m, nil
}

// Len returns the number of ammo the provider hands out in all, or -1 when
// it loops forever.
func (m *Memory) Len() int64 { return m.max }

// Acquire returns the next ammo or ErrEnd.
func (m *Memory) Acquire(context.Context) (*Ammo, error) {
	n := m.next.Add(1) - 1
	if m.max >= 0 && n >= m.max {
		return nil, ErrEnd
	}
	return &m.ammo[n%int64(len(m.ammo))], nil
}

// Release does nothing: memory ammo is shared.
func (m *Memory) Release(*Ammo) {}

// Format names an ammo file format.
type Format string

// The file formats.
const (
	// JSONLines is one JSON object (an Ammo) per line; blank lines and
	// lines starting with '#' are skipped.
	JSONLines Format = "jsonline"
	// URI is pandora's uri format: "[Name: value]" lines set a header for
	// the lines after them ("[Name:]" drops it), other lines are
	// "URI [tag]" GET requests.
	URI Format = "uri"
)

// Decoder decodes one ammo per call from a line-oriented stream.
type Decoder struct {
	r       *bufio.Reader
	format  Format
	line    int
	headers Headers // uri format's current headers
}

// NewDecoder returns a decoder of format reading r.
func NewDecoder(r io.Reader, format Format) (*Decoder, error) {
	switch format {
	case JSONLines, URI:
	case "":
		format = JSONLines
	default:
		return nil, errs.Invalid("format", "unknown ammo format %q (want %q or %q)", format, JSONLines, URI)
	}
	return &Decoder{r: bufio.NewReaderSize(r, 64<<10), format: format}, nil
}

// Line returns the number of the last line read.
func (d *Decoder) Line() int { return d.line }

// Decode decodes the next ammo into a (which it resets first). It returns
// io.EOF at the end of input; other errors name the line.
func (d *Decoder) Decode(a *Ammo) error {
	for {
		raw, err := d.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the buffer: collect it whole.
			buf := append([]byte(nil), raw...)
			for err == bufio.ErrBufferFull {
				raw, err = d.r.ReadSlice('\n')
				buf = append(buf, raw...)
			}
			raw = buf
		}
		if len(raw) == 0 && err != nil {
			if err == io.EOF {
				return io.EOF
			}
			return errs.Wrap(errs.Unavailable, err, "reading ammo")
		}
		d.line++
		line := bytes.TrimSpace(raw)
		if len(line) == 0 || line[0] == '#' {
			if err == io.EOF {
				return io.EOF
			}
			continue
		}
		a.reset()
		var derr error
		var ok bool
		if d.format == JSONLines {
			derr, ok = decodeJSONLine(line, a), true
		} else {
			ok, derr = d.decodeURILine(line, a)
		}
		if derr != nil {
			return errs.Invalid(fmt.Sprintf("line %d", d.line), "%v", derr)
		}
		if ok {
			return nil
		}
		if err == io.EOF {
			return io.EOF
		}
	}
}

func decodeJSONLine(line []byte, a *Ammo) error {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(a); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value on the line")
	}
	return validate(a)
}

func validate(a *Ammo) error {
	if a.URI == "" && a.Call == "" && len(a.Vars) == 0 {
		return errors.New("ammo needs a uri, a call or vars")
	}
	if strings.ContainsAny(a.Method, " \r\n\t") {
		return fmt.Errorf("bad method %q", a.Method)
	}
	if strings.ContainsAny(a.URI, " \r\n") {
		return fmt.Errorf("uri %q contains white space", a.URI)
	}
	for _, h := range a.Headers {
		if h.Name == "" || strings.ContainsAny(h.Name, ": \r\n") || strings.ContainsAny(h.Value, "\r\n") {
			return fmt.Errorf("bad header %q", h.Name)
		}
	}
	return nil
}

// decodeURILine handles one non-blank line of the uri format. ok reports
// whether a carries a request (header lines only change state).
func (d *Decoder) decodeURILine(line []byte, a *Ammo) (ok bool, err error) {
	if line[0] == '[' {
		if line[len(line)-1] != ']' {
			return false, errors.New("header line must end with ']'")
		}
		name, value, found := strings.Cut(string(line[1:len(line)-1]), ":")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !found || name == "" || strings.ContainsAny(name, " \t") {
			return false, errors.New("header line must be [Name: value]")
		}
		kept := d.headers[:0]
		for _, h := range d.headers {
			if !strings.EqualFold(h.Name, name) {
				kept = append(kept, h)
			}
		}
		d.headers = kept
		if value != "" {
			d.headers = append(d.headers, Header{Name: name, Value: value})
		}
		return false, nil
	}
	uri, tag, _ := strings.Cut(string(line), " ")
	a.URI, a.Tag = uri, strings.TrimSpace(tag)
	a.Method = "GET"
	for _, h := range d.headers {
		if strings.EqualFold(h.Name, "Host") {
			a.Host = h.Value
			continue
		}
		a.Headers = append(a.Headers, h)
	}
	if !strings.HasPrefix(uri, "/") && !strings.HasPrefix(uri, "http://") && !strings.HasPrefix(uri, "https://") {
		return false, fmt.Errorf("uri %q must start with / or http(s)://", uri)
	}
	return true, validate(a)
}

// Load decodes all of r.
func Load(r io.Reader, format Format) ([]Ammo, error) {
	d, err := NewDecoder(r, format)
	if err != nil {
		return nil, err
	}
	var out []Ammo
	for {
		var a Ammo
		err := d.Decode(&a)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
}

// Stream is a Provider that reads a file as it goes, for ammo too large to
// load: each Acquire decodes the next line into a pooled Ammo, and the file
// is reread for each pass.
type Stream struct {
	path   string
	open   func() (io.ReadCloser, error)
	format Format
	lim    Limits

	mu     sync.Mutex
	f      io.ReadCloser
	dec    *Decoder
	pass   int64
	served int64
	inPass int64
	err    error // sticky
	pool   sync.Pool
}

// NewStream opens path and returns a streaming provider. The file is
// closed by Close.
func NewStream(path string, format Format, lim Limits) (*Stream, error) {
	return newStream(path, func() (io.ReadCloser, error) { return os.Open(path) }, format, lim)
}

// newStream is NewStream reading the file that open opens (for each
// pass); path names it in errors.
func newStream(path string, open func() (io.ReadCloser, error), format Format, lim Limits) (*Stream, error) {
	if lim.Passes < 0 {
		return nil, errs.Invalid("passes", "must not be negative, got %d", lim.Passes)
	}
	if lim.Limit < 0 {
		return nil, errs.Invalid("limit", "must not be negative, got %d", lim.Limit)
	}
	s := &Stream{path: path, open: open, format: format, lim: lim}
	s.pool.New = func() any { return new(Ammo) }
	if err := s.reopen(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Stream) reopen() error {
	f, err := s.open()
	if err != nil {
		return errs.Wrap(errs.InvalidArgument, err, "opening ammo file")
	}
	dec, err := NewDecoder(f, s.format)
	if err != nil {
		f.Close()
		return err
	}
	if s.f != nil {
		s.f.Close()
	}
	s.f, s.dec, s.inPass = f, dec, 0
	return nil
}

// Acquire decodes the next ammo, or returns ErrEnd.
func (s *Stream) Acquire(ctx context.Context) (*Ammo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a := s.pool.Get().(*Ammo)
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.err != nil {
			s.pool.Put(a)
			return nil, s.err
		}
		if s.lim.Limit > 0 && s.served >= s.lim.Limit {
			s.err = ErrEnd
			continue
		}
		err := s.dec.Decode(a)
		if err == nil {
			s.served++
			s.inPass++
			return a, nil
		}
		if err != io.EOF {
			s.err = errs.WithField(err, s.path)
			continue
		}
		s.pass++
		switch {
		case s.inPass == 0:
			s.err = errs.Invalid(s.path, "no ammo in file")
		case s.lim.Passes > 0 && s.pass >= s.lim.Passes:
			s.err = ErrEnd
		default:
			if err := s.reopen(); err != nil {
				s.err = err
			}
		}
	}
}

// Release returns a to the pool.
func (s *Stream) Release(a *Ammo) { s.pool.Put(a) }

// Close closes the file.
func (s *Stream) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	if s.err == nil {
		s.err = ErrEnd
	}
	return err
}
