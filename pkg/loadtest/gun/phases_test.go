package gun

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/capstanhq/capstan/internal/loadtesttest"
	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/ammo"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
)

// timedShoot fires a at g and returns the shot and how long Shoot took.
func timedShoot(t *testing.T, g Gun, a *ammo.Ammo) (*Shot, time.Duration) {
	t.Helper()
	s := &Shot{Ammo: a}
	start := time.Now()
	g.Shoot(context.Background(), s)
	took := time.Since(start)
	if s.Class != aggregate.OK || s.Code != 200 {
		t.Fatalf("shot failed: class %s code %d err %v", s.Class, s.Code, s.Err)
	}
	return s, took
}

// within fails unless want-PhaseEarly <= got <= want+PhaseSlack (the
// margins of loadtesttest).
func within(t *testing.T, what string, got int64, want time.Duration) {
	t.Helper()
	if d := time.Duration(got); d < want-loadtesttest.PhaseEarly || d > want+loadtesttest.PhaseSlack {
		t.Errorf("%s = %v, want about %v", what, d, want)
	}
}

// checkPhases checks a shot of a slow server (loadtesttest): connect at
// least minConnect (0: exactly 0, for a reused connection; negative:
// anything), a short send, receive about BodyDelay, and what is left of the
// shot's time about HeadDelay.
func checkPhases(t *testing.T, s *Shot, took time.Duration, minConnect time.Duration) {
	t.Helper()
	t.Logf("took %v: connect %v send %v receive %v", took, time.Duration(s.Connect), time.Duration(s.Send), time.Duration(s.Receive))
	switch {
	case minConnect == 0 && s.Connect != 0:
		t.Errorf("connect = %v on a reused connection, want 0", time.Duration(s.Connect))
	case minConnect > 0 && (time.Duration(s.Connect) < minConnect || time.Duration(s.Connect) > minConnect+loadtesttest.PhaseSlack):
		t.Errorf("connect = %v, want at least %v", time.Duration(s.Connect), minConnect)
	}
	if s.Send <= 0 || time.Duration(s.Send) > loadtesttest.PhaseSlack {
		t.Errorf("send = %v, want a little more than 0", time.Duration(s.Send))
	}
	within(t, "receive", s.Receive, loadtesttest.BodyDelay)
	rest := int64(took) - s.Connect - s.Send - s.Receive
	within(t, "the wait for the first byte (the rest)", rest, loadtesttest.HeadDelay)
}

func TestLeanPhases(t *testing.T) {
	g := newGun(t, config.GunSpec{Type: "http", Target: loadtesttest.SlowRawServer(t, false)})
	s, took := timedShoot(t, g, &ammo.Ammo{URI: "/"})
	if s.Connect <= 0 {
		t.Errorf("connect = %v on a new connection, want more than 0", time.Duration(s.Connect))
	}
	checkPhases(t, s, took, -1)
	s, took = timedShoot(t, g, &ammo.Ammo{URI: "/"})
	checkPhases(t, s, took, 0)

	// A connection per shot: every shot dials.
	g = newGun(t, config.GunSpec{Type: "http", Target: loadtesttest.SlowRawServer(t, true)})
	for range 2 {
		s, took := timedShoot(t, g, &ammo.Ammo{URI: "/"})
		if s.Connect <= 0 {
			t.Errorf("connect = %v on a new connection, want more than 0", time.Duration(s.Connect))
		}
		checkPhases(t, s, took, -1)
	}
}

func TestLeanPhasesOfAFailedDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	g := newGun(t, config.GunSpec{Type: "http", Target: "http://" + addr})
	s := shoot(g, &ammo.Ammo{URI: "/"})
	if s.Class != aggregate.Conn || s.Connect <= 0 || s.Send != 0 || s.Receive != 0 {
		t.Fatalf("refused: class %s, connect %d send %d receive %d", s.Class, s.Connect, s.Send, s.Receive)
	}
}

// stdGunWith builds a net/http-based gun with Env.Phases set to phases.
func stdGunWith(t *testing.T, spec config.GunSpec, phases bool) Gun {
	t.Helper()
	f, err := NewRegistry().Build(context.Background(), &spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	g, err := f.New(context.Background(), Env{Now: func() int64 { return 0 }, Report: func(aggregate.Sample) {}, Phases: phases})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func TestStdPhases(t *testing.T) {
	insecure := &config.TLSSpec{InsecureSkipVerify: true}
	tls1 := loadtesttest.SlowTLSServer(t, false)
	tls2 := loadtesttest.SlowTLSServer(t, true)
	h2c := httptest.NewUnstartedServer(loadtesttest.SlowHandler)
	h2c.Config.Protocols = &http.Protocols{}
	h2c.Config.Protocols.SetUnencryptedHTTP2(true)
	h2c.Start()
	t.Cleanup(h2c.Close)
	plain := httptest.NewServer(loadtesttest.SlowHandler)
	t.Cleanup(plain.Close)
	for _, c := range []struct {
		name       string
		spec       config.GunSpec
		minConnect time.Duration // of the first shot
	}{
		{"https/1.1", config.GunSpec{Type: "http", Target: tls1.URL, TLS: insecure}, loadtesttest.Handshake},
		{"https/2", config.GunSpec{Type: "http", Target: tls2.URL, HTTP2: true, TLS: insecure}, loadtesttest.Handshake},
		{"h2c", config.GunSpec{Type: "http", Target: h2c.URL, H2C: true}, -1},
		{"std", config.GunSpec{Type: "http", Target: plain.URL, Client: "std"}, -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := stdGunWith(t, c.spec, true)
			s, took := timedShoot(t, g, &ammo.Ammo{URI: "/"})
			if s.Connect <= 0 {
				t.Errorf("connect = %v on a new connection, want more than 0", time.Duration(s.Connect))
			}
			checkPhases(t, s, took, c.minConnect)
			s, took = timedShoot(t, g, &ammo.Ammo{URI: "/"})
			checkPhases(t, s, took, 0)

			// Without Env.Phases the net/http gun does not trace.
			g = stdGunWith(t, c.spec, false)
			if s, _ := timedShoot(t, g, &ammo.Ammo{URI: "/"}); s.Connect != 0 || s.Send != 0 || s.Receive != 0 {
				t.Errorf("phases without Env.Phases: %d %d %d", s.Connect, s.Send, s.Receive)
			}
		})
	}
}

func TestScenarioPhases(t *testing.T) {
	srv := httptest.NewServer(loadtesttest.SlowHandler)
	t.Cleanup(srv.Close)
	spec := config.GunSpec{Type: "scenario", Target: srv.URL, Steps: []config.StepSpec{{Name: "one", URI: "/1"}, {Name: "two", URI: "/2"}}}
	f, err := NewScenario(context.Background(), &spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var steps []aggregate.Sample
	g, err := f.New(context.Background(), Env{Now: func() int64 { return 0 }, Report: func(s aggregate.Sample) { steps = append(steps, s) }, Phases: true})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := timedShoot(t, g, &ammo.Ammo{})
	if len(steps) != 2 {
		t.Fatalf("%d step samples", len(steps))
	}
	if steps[0].Connect <= 0 || steps[1].Connect != 0 {
		t.Errorf("connect of the steps: %v, %v; want the first to dial and the second to reuse", steps[0].Connect, steps[1].Connect)
	}
	for _, st := range steps {
		within(t, st.Tag+" receive", st.Receive, loadtesttest.BodyDelay)
	}
	if s.Connect != steps[0].Connect+steps[1].Connect || s.Send != steps[0].Send+steps[1].Send || s.Receive != steps[0].Receive+steps[1].Receive {
		t.Errorf("shot phases %d/%d/%d are not the sums of the steps' %+v", s.Connect, s.Send, s.Receive, steps)
	}
}
