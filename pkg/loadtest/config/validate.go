package config

import (
	"strconv"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/schedule"
)

// DefaultOverdueAfter is the lateness beyond which a shot is overdue when
// the spec sets none.
const DefaultOverdueAfter = 10 * Duration(1e6)

// MaxInstances bounds a pool's instances.
const MaxInstances = 1 << 20

// Validate checks the whole spec and returns the first problem, naming its
// field path ("pools[1].rps[0].duration"). Gun-specific settings are
// checked when the gun is built.
func (s *Spec) Validate() error {
	if len(s.Pools) == 0 {
		return errs.Invalid("pools", "at least one pool is required")
	}
	ids := map[string]int{}
	for i := range s.Pools {
		p := &s.Pools[i]
		if err := p.Validate(); err != nil {
			return errs.WithField(err, "pools["+strconv.Itoa(i)+"]")
		}
		if j, dup := ids[p.ID]; dup {
			return errs.Invalid("pools["+strconv.Itoa(i)+"].id", "duplicate pool id %q (also pools[%d])", p.ID, j)
		}
		ids[p.ID] = i
	}
	if _, err := s.Rules(); err != nil {
		return err
	}
	if s.Duration < 0 {
		return errs.Invalid("duration", "must not be negative")
	}
	if s.OverdueAfter < 0 {
		return errs.Invalid("overdueAfter", "must not be negative")
	}
	if s.TimerResolution < 0 || s.TimerResolution > Duration(time.Second) {
		return errs.Invalid("timerResolution", "must be in [0, 1s]")
	}
	switch s.Timer {
	case "", TimerPrecise, TimerCoarse:
	default:
		return errs.Invalid("timer", "unknown timer %q (want %s or %s)", s.Timer, TimerPrecise, TimerCoarse)
	}
	return nil
}

// The timer choices of Spec.Timer.
const (
	// TimerPrecise wakes instances with a kernel timer (the default).
	TimerPrecise = "precise"
	// TimerCoarse wakes instances with the Go runtime's timers.
	TimerCoarse = "coarse"
)

// Rules parses the thresholds.
func (s *Spec) Rules() ([]aggregate.Rule, error) {
	var out []aggregate.Rule
	for i, text := range s.Thresholds {
		r, err := aggregate.ParseRule(text)
		if err != nil {
			return nil, errs.WithField(err, "thresholds["+strconv.Itoa(i)+"]")
		}
		out = append(out, r)
	}
	return out, nil
}

// DefaultTimerResolution is the precise timer's grid when the spec sets
// none.
const DefaultTimerResolution = 500 * time.Microsecond

// Resolution returns the precise timer's grid, with the default applied.
func (s *Spec) Resolution() time.Duration {
	if s.TimerResolution == 0 {
		return DefaultTimerResolution
	}
	return s.TimerResolution.D()
}

// Overdue returns the overdue threshold, with the default applied.
func (s *Spec) Overdue() Duration {
	if s.OverdueAfter == 0 {
		return DefaultOverdueAfter
	}
	return s.OverdueAfter
}

// Validate checks a pool.
func (p *Pool) Validate() error {
	if p.ID == "" {
		return errs.Invalid("id", "required")
	}
	if p.Gun.Type == "" {
		return errs.Invalid("gun.type", "required")
	}
	if err := p.Ammo.Validate(); err != nil {
		return errs.WithField(err, "ammo")
	}
	if p.Instances <= 0 || p.Instances > MaxInstances {
		return errs.Invalid("instances", "must be in [1, %d], got %d", MaxInstances, p.Instances)
	}
	if len(p.RPS) == 0 {
		return errs.Invalid("rps", "at least one schedule segment is required")
	}
	if _, err := p.Plan(); err != nil {
		return err
	}
	if _, err := p.StartupPlan(); err != nil {
		return err
	}
	return nil
}

// Plan builds the pool's shot schedule.
func (p *Pool) Plan() (*schedule.Plan, error) {
	return buildPlan("rps", p.RPS)
}

// StartupPlan builds the pool's instance start-up schedule: every instance
// at once when Startup is empty.
func (p *Pool) StartupPlan() (*schedule.Plan, error) {
	if len(p.Startup) == 0 {
		seg, err := schedule.Once(int64(p.Instances))
		if err != nil {
			return nil, errs.WithField(err, "instances")
		}
		return schedule.NewPlan(seg), nil
	}
	return buildPlan("startup", p.Startup)
}

func buildPlan(field string, specs []ScheduleSpec) (*schedule.Plan, error) {
	var segs []schedule.Segment
	for i := range specs {
		s, err := specs[i].Segments()
		if err != nil {
			return nil, errs.WithField(err, field+"["+strconv.Itoa(i)+"]")
		}
		segs = append(segs, s...)
	}
	return schedule.NewPlan(segs...), nil
}

// Segments builds the segments of one schedule entry. Fields the type does
// not use must be zero.
func (s *ScheduleSpec) Segments() ([]schedule.Segment, error) {
	used := map[string]bool{}
	var segs []schedule.Segment
	var err error
	one := func(seg schedule.Segment, e error) {
		segs, err = []schedule.Segment{seg}, e
	}
	switch s.Type {
	case "const":
		used["ops"], used["duration"] = true, true
		one(schedule.Const(s.Ops, s.Duration.D()))
	case "line":
		used["from"], used["to"], used["duration"] = true, true, true
		one(schedule.Line(s.From, s.To, s.Duration.D()))
	case "step":
		used["from"], used["to"], used["step"], used["duration"] = true, true, true, true
		segs, err = schedule.Step(s.From, s.To, s.Step, s.Duration.D())
	case "once":
		used["times"] = true
		one(schedule.Once(s.Times))
	case "unlimited":
		used["duration"] = true
		one(schedule.Unlimited(s.Duration.D()))
	case "":
		return nil, errs.Invalid("type", "required: const, line, step, once or unlimited")
	default:
		return nil, errs.Invalid("type", "unknown schedule type %q (want const, line, step, once or unlimited)", s.Type)
	}
	if err != nil {
		return nil, err
	}
	for name, set := range map[string]bool{"ops": s.Ops != 0, "from": s.From != 0, "to": s.To != 0,
		"step": s.Step != 0, "duration": s.Duration != 0, "times": s.Times != 0} {
		if set && !used[name] {
			return nil, errs.Invalid(name, "not used by a %s schedule", s.Type)
		}
	}
	if used["duration"] && s.Duration == 0 && s.Type != "unlimited" {
		return nil, errs.Invalid("duration", "required for a %s schedule", s.Type)
	}
	if s.Type == "unlimited" && s.Duration == 0 {
		return nil, errs.Invalid("duration", "required for an unlimited schedule")
	}
	return segs, nil
}
