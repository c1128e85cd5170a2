package engine

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/ammo"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
	"github.com/capstanhq/capstan/pkg/loadtest/files"
	"github.com/capstanhq/capstan/pkg/loadtest/gun"
)

// phaseGun reports fixed phases and records whether it was asked for them.
type phaseGun struct{}

func (phaseGun) Shoot(_ context.Context, s *gun.Shot) {
	s.Code, s.Proto = 200, aggregate.HTTP
	s.Connect, s.Send, s.Receive = 3, 5, 7
}
func (phaseGun) Close() error { return nil }

type phaseFactory struct{ asked *atomic.Int64 }

func (f phaseFactory) New(_ context.Context, env gun.Env) (gun.Gun, error) {
	if env.Phases {
		f.asked.Add(1)
	}
	return phaseGun{}, nil
}
func (phaseFactory) Close() error { return nil }

// phaseSink is a captureSink that wants phases.
type phaseSink struct{ captureSink }

func (*phaseSink) WantsPhases() bool { return true }

func TestShotPhasesReachSamples(t *testing.T) {
	for _, want := range []bool{false, true} {
		var asked atomic.Int64
		r := gun.NewRegistry()
		r.Register("phases", func(context.Context, *config.GunSpec, files.FS) (gun.Factory, error) {
			return phaseFactory{asked: &asked}, nil
		})
		spec := &config.Spec{Pools: []config.Pool{{
			ID: "p", Gun: config.GunSpec{Type: "phases"}, Instances: 2,
			Ammo: ammo.Spec{Type: "inline", Requests: []ammo.Ammo{{URI: "/"}}},
			RPS:  []config.ScheduleSpec{{Type: "once", Times: 5}},
		}}}
		var sink aggregate.Sink
		var samples func() []aggregate.Sample
		if want {
			s := &phaseSink{}
			sink, samples = s, func() []aggregate.Sample { return s.samples }
		} else {
			s := &captureSink{}
			sink, samples = s, func() []aggregate.Sample { return s.samples }
		}
		if _, err := Run(context.Background(), spec, Options{Registry: r, Sinks: []aggregate.Sink{sink}}); err != nil {
			t.Fatal(err)
		}
		if got := asked.Load() == 2; got != want {
			t.Errorf("a sink wanting phases %v: %d of 2 guns asked for them", want, asked.Load())
		}
		got := samples()
		if len(got) != 5 {
			t.Fatalf("%d samples", len(got))
		}
		for _, s := range got {
			if s.Connect != 3 || s.Send != 5 || s.Receive != 7 {
				t.Fatalf("sample phases %d/%d/%d, want the gun's 3/5/7", s.Connect, s.Send, s.Receive)
			}
		}
	}
}
