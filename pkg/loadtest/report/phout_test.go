package report

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/capstanhq/capstan/internal/loadtesttest"
	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/ammo"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
	"github.com/capstanhq/capstan/pkg/loadtest/engine"
)

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
		{ID: "lean", Gun: config.GunSpec{Type: "http", Target: loadtesttest.SlowRawServer(t, true)}, Ammo: inline, RPS: once, Instances: 1},
		{ID: "h2", Gun: config.GunSpec{Type: "http", Target: loadtesttest.SlowTLSServer(t, true).URL, HTTP2: true, TLS: &config.TLSSpec{InsecureSkipVerify: true}},
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
			if got < us(want-loadtesttest.PhaseEarly) || got > us(want+loadtesttest.PhaseSlack) {
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
			if l.send > us(loadtesttest.PhaseSlack) {
				t.Errorf("%s line %+v: send %dµs", l.tag, l, l.send)
			}
			around(l, "receive", l.receive, loadtesttest.BodyDelay)
			if !corrected {
				// Uncorrected, latency is the wait for the first byte.
				around(l, "latency", l.latency, loadtesttest.HeadDelay)
			} else if l.latency < us(loadtesttest.HeadDelay-loadtesttest.PhaseEarly) {
				t.Errorf("%s line %+v: corrected latency %dµs below the head delay", l.tag, l, l.latency)
			}
			switch l.tag {
			case "lean":
				// A new connection per shot, without TLS: a short dial.
				if l.connect <= 0 || l.connect > us(loadtesttest.PhaseSlack) {
					t.Errorf("lean line %+v: connect %dµs, want a short dial", l, l.connect)
				}
			case "h2":
				// One connection, its handshake in the first shot.
				if l.connect != 0 {
					h2Dialed++
					around(l, "connect", l.connect, loadtesttest.Handshake)
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
