package report

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/ammo"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
	"github.com/capstanhq/capstan/pkg/loadtest/engine"
)

// The delays of TestPhoutPhases's servers, and how far the phout columns
// may stray from them: above, a loaded machine or the race detector slows
// the client; below, the client may see the head late, shortening the
// receive phase by as much.
const (
	headDelay  = 30 * time.Millisecond // request read → response head
	bodyDelay  = 40 * time.Millisecond // response head → body
	handshake  = 25 * time.Millisecond // TLS: ClientHello → ServerHello
	phaseSlack = 60 * time.Millisecond
	phaseEarly = 8 * time.Millisecond
)

// closingSlowServer answers a request with its head after headDelay and
// its body bodyDelay later, then closes the connection, so every shot
// dials.
func closingSlowServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				time.Sleep(headDelay)
				if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")); err != nil {
					return
				}
				time.Sleep(bodyDelay)
				c.Write([]byte("hello"))
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// slowTLSServer takes handshake to answer a ClientHello and answers
// requests like closingSlowServer, keeping connections alive.
func slowTLSServer(t *testing.T) string {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(headDelay)
		w.Header().Set("Content-Length", "5")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		time.Sleep(bodyDelay)
		w.Write([]byte("hello"))
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		time.Sleep(handshake)
		return nil, nil
	}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// phoutLine is one parsed phout line; intervals in microseconds.
type phoutLine struct {
	tag                                                string
	real, connect, send, latency, receive, event, code int64
}

func parsePhout(t *testing.T, text string) []phoutLine {
	t.Helper()
	var out []phoutLine
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 12 {
			t.Fatalf("phout line %q has %d fields", line, len(f))
		}
		var v [12]int64
		for i := 2; i < 12; i++ {
			n, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				t.Fatalf("phout line %q: field %d: %v", line, i, err)
			}
			v[i] = n
		}
		out = append(out, phoutLine{tag: f[1], real: v[2], connect: v[3], send: v[4], latency: v[5], receive: v[6], event: v[7], code: v[11]})
	}
	return out
}

// TestPhoutPhases runs the engine against servers that delay the response
// head and body separately (and the TLS handshake) and checks that the
// phout columns show those delays and add up to interval_real.
func TestPhoutPhases(t *testing.T) {
	once := []config.ScheduleSpec{{Type: "once", Times: 3}}
	inline := ammo.Spec{Type: "inline", Requests: []ammo.Ammo{{URI: "/"}}}
	spec := &config.Spec{Pools: []config.Pool{
		{ID: "lean", Gun: config.GunSpec{Type: "http", Target: closingSlowServer(t)}, Ammo: inline, RPS: once, Instances: 1},
		{ID: "h2", Gun: config.GunSpec{Type: "http", Target: slowTLSServer(t), HTTP2: true, TLS: &config.TLSSpec{InsecureSkipVerify: true}},
			Ammo: inline, RPS: once, Instances: 1},
	}}
	for _, corrected := range []bool{false, true} {
		var b bytes.Buffer
		res, err := engine.Run(context.Background(), spec, engine.Options{Sinks: []aggregate.Sink{NewPhout(&b, corrected)}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Total.Errors != 0 {
			t.Fatalf("%d errors", res.Total.Errors)
		}
		lines := parsePhout(t, b.String())
		if len(lines) != 6 {
			t.Fatalf("%d phout lines:\n%s", len(lines), b.String())
		}
		t.Logf("corrected %v:\n%s", corrected, b.String())
		us := func(d time.Duration) int64 { return d.Microseconds() }
		around := func(l phoutLine, what string, got int64, want time.Duration) {
			if got < us(want-phaseEarly) || got > us(want+phaseSlack) {
				t.Errorf("%s line %+v: %s %dµs, want about %v", l.tag, l, what, got, want)
			}
		}
		h2Dialed := 0
		for _, l := range lines {
			if l.code != 200 {
				t.Errorf("line %+v: code %d", l, l.code)
			}
			if l.connect+l.send+l.latency+l.receive != l.real || l.event != l.real {
				t.Errorf("%s line %+v: connect+send+latency+receive != interval_real", l.tag, l)
			}
			if l.send > us(phaseSlack) {
				t.Errorf("%s line %+v: send %dµs", l.tag, l, l.send)
			}
			around(l, "receive", l.receive, bodyDelay)
			if !corrected {
				// Uncorrected, latency is the wait for the first byte.
				around(l, "latency", l.latency, headDelay)
			} else if l.latency < us(headDelay-phaseEarly) {
				t.Errorf("%s line %+v: corrected latency %dµs below the head delay", l.tag, l, l.latency)
			}
			switch l.tag {
			case "lean":
				// A new connection per shot, without TLS: a short dial.
				if l.connect <= 0 || l.connect > us(phaseSlack) {
					t.Errorf("lean line %+v: connect %dµs, want a short dial", l, l.connect)
				}
			case "h2":
				// One connection, its handshake in the first shot.
				if l.connect != 0 {
					h2Dialed++
					around(l, "connect", l.connect, handshake)
				}
			default:
				t.Errorf("line %+v: unknown tag", l)
			}
		}
		if h2Dialed != 1 {
			t.Errorf("%d h2 shots with a connect time, want 1 (the first)", h2Dialed)
		}
	}
}
