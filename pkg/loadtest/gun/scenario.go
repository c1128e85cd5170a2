package gun

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
	"github.com/capstanhq/capstan/pkg/loadtest/files"
)

// NewScenario is the constructor of the scenario gun: for each ammo it
// makes the spec's steps in order over net/http, filling ${name}
// placeholders from the ammo's vars and from earlier extractions. Each step
// is reported as a sample tagged with the step's name; the shot itself
// covers the whole scenario.
func NewScenario(_ context.Context, spec *config.GunSpec, fsys files.FS) (Factory, error) {
	if err := rejectFields(spec, "scenario", map[string]bool{
		"descriptorSet": spec.DescriptorSet != "", "client": spec.Client != "", "options": len(spec.Options) > 0,
	}); err != nil {
		return nil, err
	}
	if len(spec.Steps) == 0 {
		return nil, errs.Invalid("steps", "a scenario needs at least one step")
	}
	t, err := parseHTTPTarget(spec)
	if err != nil {
		return nil, err
	}
	if spec.HTTP2 && t.base.Scheme != "https" {
		return nil, errs.Invalid("http2", "HTTP/2 over TLS needs an https target; use h2c for plain http")
	}
	tc, err := tlsConfig(spec.TLS, fsys)
	if err != nil {
		return nil, err
	}
	f := &scenarioFactory{t: t}
	names := map[string]bool{}
	for i := range spec.Steps {
		st, err := compileStep(&spec.Steps[i])
		if err != nil {
			return nil, errs.WithField(err, "steps["+strconv.Itoa(i)+"]")
		}
		if names[st.Name] {
			return nil, errs.Invalid("steps["+strconv.Itoa(i)+"].name", "duplicate step name %q", st.Name)
		}
		names[st.Name] = true
		f.steps = append(f.steps, st)
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: t.connectTimeout}).DialContext,
		TLSClientConfig:     tc,
		MaxIdleConnsPerHost: 1 << 16,
		DisableCompression:  true,
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
	f.client = &http.Client{Transport: tr, Timeout: t.timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return f, nil
}

type step struct {
	config.StepSpec
	regexes []*regexp.Regexp // per Extract entry, nil unless regex
}

func compileStep(s *config.StepSpec) (*step, error) {
	if s.Name == "" {
		return nil, errs.Invalid("name", "required")
	}
	if s.URI == "" {
		return nil, errs.Invalid("uri", "required")
	}
	if s.Method != "" && !strings.Contains(s.Method, "${") && !isToken(s.Method) {
		return nil, errs.Invalid("method", "%q is not an HTTP method (a token such as GET or POST)", s.Method)
	}
	for i, h := range s.Headers {
		if h.Name == "" || !isToken(h.Name) || strings.ContainsAny(h.Value, "\r\n") {
			return nil, errs.Invalid("headers["+strconv.Itoa(i)+"]", "bad header %q", h.Name)
		}
	}
	st := &step{StepSpec: *s, regexes: make([]*regexp.Regexp, len(s.Extract))}
	for i, e := range s.Extract {
		field := "extract[" + strconv.Itoa(i) + "]"
		if e.Var == "" {
			return nil, errs.Invalid(field+".var", "required")
		}
		n := 0
		for _, set := range []bool{e.JSON != "", e.Header != "", e.Regex != ""} {
			if set {
				n++
			}
		}
		if n != 1 {
			return nil, errs.Invalid(field, "set exactly one of json, header, regex")
		}
		if e.Regex != "" {
			re, err := regexp.Compile(e.Regex)
			if err != nil {
				return nil, errs.Invalid(field+".regex", "%v", err)
			}
			if re.NumSubexp() < 1 {
				return nil, errs.Invalid(field+".regex", "needs a capturing group")
			}
			st.regexes[i] = re
		}
	}
	if s.Assert != nil {
		for i, c := range s.Assert.Status {
			if c < 100 || c > 599 {
				return nil, errs.Invalid("assert.status["+strconv.Itoa(i)+"]", "not an HTTP status: %d", c)
			}
		}
	}
	return st, nil
}

// isToken reports whether s is an HTTP token (RFC 9110), as methods and
// header names are.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

type scenarioFactory struct {
	t      *httpTarget
	client *http.Client
	steps  []*step
}

func (f *scenarioFactory) New(_ context.Context, env Env) (Gun, error) {
	if env.Now == nil || env.Report == nil {
		return nil, errs.New(errs.InvalidArgument, "the scenario gun needs Env.Now and Env.Report")
	}
	return &scenarioGun{f: f, env: env}, nil
}

func (f *scenarioFactory) Close() error {
	f.client.CloseIdleConnections()
	return nil
}

type scenarioGun struct {
	f   *scenarioFactory
	env Env
	buf bytes.Buffer
}

func (g *scenarioGun) Close() error { return nil }

// errAssertion marks a failed check or extraction.
var errAssertion = errors.New("assertion failed")

func (g *scenarioGun) Shoot(ctx context.Context, s *Shot) {
	vars := make(map[string]string, len(s.Ammo.Vars)+4)
	for k, v := range s.Ammo.Vars {
		vars[k] = v
	}
	for i, st := range g.f.steps {
		sent := g.env.Now()
		intended := sent
		if i == 0 {
			intended = s.Intended
		}
		smp := aggregate.Sample{Tag: st.Name, Intended: intended, Sent: sent}
		r, err := g.step(ctx, st, vars)
		code := r.code
		smp.Done = g.env.Now()
		smp.BytesIn, smp.BytesOut = r.in, r.out
		smp.Connect, smp.Send, smp.Receive = r.connect, r.send, r.receive
		s.BytesIn += r.in
		s.BytesOut += r.out
		s.Connect += r.connect
		s.Send += r.send
		s.Receive += r.receive
		if code > 0 {
			smp.Proto, smp.Code = aggregate.HTTP, int32(code)
			s.Proto, s.Code = aggregate.HTTP, int32(code)
		}
		switch {
		case err == nil:
		case errors.Is(err, errAssertion):
			smp.Class = aggregate.Assertion
		case code >= 400 && errors.Is(err, errStatus):
			smp.Class = aggregate.Status
		default:
			smp.Class, smp.Errno = aggregate.ClassifyError(err)
		}
		g.env.Report(smp)
		if err != nil {
			s.Class, s.Errno, s.Err = smp.Class, smp.Errno, fmt.Errorf("step %s: %w", st.Name, err)
			return
		}
	}
}

var errStatus = errors.New("bad status")

// step makes one step's request, checks it and extracts its variables.
func (g *scenarioGun) step(ctx context.Context, st *step, vars map[string]string) (stdResult, error) {
	method, err := expand(st.Method, vars)
	if err != nil {
		return stdResult{}, err
	}
	uri, err := expand(st.URI, vars)
	if err != nil {
		return stdResult{}, err
	}
	body, err := expand(st.Body, vars)
	if err != nil {
		return stdResult{}, err
	}
	headers := st.Headers
	if len(headers) > 0 {
		headers = slices.Clone(headers)
		for i := range headers {
			if headers[i].Value, err = expand(headers[i].Value, vars); err != nil {
				return stdResult{}, err
			}
		}
	}
	g.buf.Reset()
	// The response is needed only for extraction and assertions on the
	// body; otherwise it is discarded.
	keep := &g.buf
	if !st.needsBody() {
		keep = nil
	}
	r, err := doStd(ctx, g.f.client, g.f.t, stdRequest{method: method, uri: uri, headers: headers, body: body,
		keep: keep, phases: g.env.Phases})
	if err != nil {
		return r, err
	}
	if st.Assert != nil {
		if len(st.Assert.Status) > 0 && !slices.Contains(st.Assert.Status, r.code) {
			return r, fmt.Errorf("%w: status %d not in %v", errAssertion, r.code, st.Assert.Status)
		}
		if st.Assert.BodyContains != "" && !bytes.Contains(g.buf.Bytes(), []byte(st.Assert.BodyContains)) {
			return r, fmt.Errorf("%w: body does not contain %q", errAssertion, st.Assert.BodyContains)
		}
	}
	if (st.Assert == nil || len(st.Assert.Status) == 0) && r.code >= 400 {
		return r, fmt.Errorf("%w %d", errStatus, r.code)
	}
	for i, e := range st.Extract {
		v, ok := "", false
		switch {
		case e.Header != "":
			v = r.header.Get(e.Header)
			ok = v != ""
		case e.JSON != "":
			v, ok = jsonPath(g.buf.Bytes(), e.JSON)
		default:
			if m := st.regexes[i].FindSubmatch(g.buf.Bytes()); m != nil {
				v, ok = string(m[1]), true
			}
		}
		if !ok {
			return r, fmt.Errorf("%w: extract %s: not found", errAssertion, e.Var)
		}
		vars[e.Var] = v
	}
	return r, nil
}

func (s *step) needsBody() bool {
	if s.Assert != nil && s.Assert.BodyContains != "" {
		return true
	}
	for _, e := range s.Extract {
		if e.JSON != "" || e.Regex != "" {
			return true
		}
	}
	return false
}

// expand replaces ${name} with vars[name]; an unknown name is an error.
func expand(s string, vars map[string]string) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return "", fmt.Errorf("unclosed ${ in %q", s)
		}
		name := s[i+2 : i+j]
		v, ok := vars[name]
		if !ok {
			return "", fmt.Errorf("%w: undefined variable %q", errAssertion, name)
		}
		b.WriteString(s[:i])
		b.WriteString(v)
		s = s[i+j+1:]
	}
}

// jsonPath returns the value at a dot path ("a.b.0.c") of a JSON document,
// strings as they are and other values in JSON.
func jsonPath(doc []byte, path string) (string, bool) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return "", false
	}
	for _, part := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[part]; !ok {
				return "", false
			}
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(x) {
				return "", false
			}
			v = x[i]
		default:
			return "", false
		}
	}
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case nil:
		return "", false
	}
	b, err := json.Marshal(v)
	return string(b), err == nil
}
