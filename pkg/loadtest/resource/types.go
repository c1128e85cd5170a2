package resource

import (
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
	"github.com/capstanhq/capstan/pkg/loadtest/files"
	"github.com/capstanhq/capstan/pkg/loadtest/schedule"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// Kind names.
const (
	// KindLoadTest is the kind of LoadTest.
	KindLoadTest = "LoadTest"
	// KindLoadTestPart is the kind of LoadTestPart.
	KindLoadTestPart = "LoadTestPart"
)

// MaxParallelism bounds spec.parallelism.
const MaxParallelism = 256

// AddToScheme registers LoadTest (collection "loadtests") and
// LoadTestPart ("loadtestparts"), both namespaced.
func AddToScheme(s *store.Scheme) error {
	if _, err := store.Register[LoadTest](s, KindLoadTest); err != nil {
		return err
	}
	_, err := store.Register[LoadTestPart](s, KindLoadTestPart)
	return err
}

// LoadTest is a load test run by the built-in controller: its spec is the
// configuration of `capstan loadtest run` plus parallelism and cancel; its
// status is the run's progress and results.
type LoadTest struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec is the test.
	Spec LoadTestSpec `json:"spec"`
	// Status is what the controller observed.
	Status LoadTestStatus `json:"status,omitzero"`
}

// LoadTestSpec is a load test's configuration: the fields of config.Spec
// (pools, thresholds, duration, …) inline, so that a config file's body
// is a valid spec, plus the fields of the resource.
type LoadTestSpec struct {
	config.Spec
	// Parallelism spreads the load over this many live members, each
	// running the i-th of n shares of every schedule from a common start
	// time; default 1.
	Parallelism int `json:"parallelism,omitempty"`
	// Cancel stops the test: a pending test never starts, a running one
	// stops at once (shots in flight are canceled) and ends Cancelled
	// with the results so far.
	Cancel bool `json:"cancel,omitempty"`

	// raw is the JSON the spec was decoded from. It is written back
	// unchanged while the spec still means the same, so that a write of
	// ours (a finalizer) neither rewrites what the user applied nor bumps
	// the generation; and always when it did not decode strictly, so that
	// nothing the user wrote is lost. decodeErr says why it did not.
	raw       json.RawMessage
	decodeErr error
}

// UnmarshalJSON decodes strictly. A spec that is not strictly valid JSON
// of its type (an unknown field, a wrong type) still decodes, as far as
// it goes, so that the controller can report the problem in status
// instead of the object being unreadable; Validate returns the problem.
func (s *LoadTestSpec) UnmarshalJSON(b []byte) error {
	type plain LoadTestSpec
	var p plain
	raw := append(json.RawMessage(nil), b...)
	if err := meta.DecodeStrict(b, &p); err != nil {
		var q plain
		_ = json.Unmarshal(b, &q) // best effort: fills what it can
		*s = LoadTestSpec(q)
		s.decodeErr = errs.WithField(decodeError(b, err), "spec")
		s.raw = raw
		return nil
	}
	*s = LoadTestSpec(p)
	s.raw = raw
	return nil
}

// lineRef is the line reference config.Decode puts before its messages;
// lines of a spec re-encoded as JSON mean nothing to its author.
var lineRef = regexp.MustCompile(`^line \d+: `)

// decodeError explains why b does not decode strictly, with the field path
// of the config package's decoder ("pools[0].instances") when it finds the
// problem, else err.
func decodeError(b []byte, err error) error {
	var top map[string]json.RawMessage
	if json.Unmarshal(b, &top) != nil {
		return err
	}
	for _, f := range []struct {
		name string
		into any
		want string
	}{{"parallelism", new(int), "a whole number"}, {"cancel", new(bool), "a boolean"}} {
		if v, ok := top[f.name]; ok {
			if json.Unmarshal(v, f.into) != nil {
				return errs.Invalid(f.name, "want %s, got %s", f.want, v)
			}
			delete(top, f.name)
		}
	}
	rest, mErr := json.Marshal(top)
	if mErr != nil {
		return err
	}
	// Placeholders stay as they are: resources do not expand them.
	keep := func(name string) (string, bool) { return "${env:" + name + "}", true }
	_, cErr := config.Decode(rest, keep)
	var e *errs.Error
	if !errors.As(cErr, &e) || e.Field == "" {
		return err
	}
	c := *e
	c.Message = lineRef.ReplaceAllString(c.Message, "")
	return &c
}

// MarshalJSON writes the spec. A decoded spec is written back exactly as
// it was read while it still means the same (always, if it did not decode
// strictly); a changed one is written afresh.
func (s LoadTestSpec) MarshalJSON() ([]byte, error) {
	if s.raw != nil && (s.decodeErr != nil || s.sameAsRaw()) {
		return s.raw, nil
	}
	type plain LoadTestSpec
	p := plain(s)
	p.raw, p.decodeErr = nil, nil
	return json.Marshal(p)
}

// sameAsRaw reports whether s still holds what raw decodes to.
func (s *LoadTestSpec) sameAsRaw() bool {
	var d LoadTestSpec
	if d.UnmarshalJSON(s.raw) != nil || d.decodeErr != nil {
		return false
	}
	d.raw, d.decodeErr = nil, nil
	c := *s
	c.raw, c.decodeErr = nil, nil
	return reflect.DeepEqual(&c, &d)
}

// Parts returns the number of parts the test runs in: Parallelism, or 1.
func (s *LoadTestSpec) Parts() int {
	if s.Parallelism <= 0 {
		return 1
	}
	return s.Parallelism
}

// Validate checks the spec without I/O and returns the first problem,
// naming its field from "spec" ("spec.pools[0].rps[0].duration"). The
// controller checks more (gun types, file paths) against its Options.
func (s *LoadTestSpec) Validate() error {
	if s.decodeErr != nil {
		return s.decodeErr
	}
	if s.Parallelism < 0 || s.Parallelism > MaxParallelism {
		return errs.Invalid("spec.parallelism", "must be in [1, %d], got %d", MaxParallelism, s.Parallelism)
	}
	if err := s.Spec.Validate(); err != nil {
		return errs.WithField(err, "spec")
	}
	if s.Report != (config.Report{}) {
		return errs.Invalid("spec.report", "a LoadTest writes its results into its status, not into files of the process running it; remove report")
	}
	return nil
}

// checkRunnable checks what depends on the processes that run the parts:
// every gun type must be known (knownGuns), and files may only be named
// when filesDir is set, by relative paths that stay inside it (symbolic
// links included, as far as filesDir can be read here), so that whoever
// may write a LoadTest cannot make the runners read other files. The
// runners open files through a files.Root, which enforces the same.
func checkRunnable(s *config.Spec, knownGuns []string, filesDir string) error {
	var root *files.Root
	defer func() {
		if root != nil {
			root.Close()
		}
	}()
	for i := range s.Pools {
		p := &s.Pools[i]
		field := "spec.pools[" + strconv.Itoa(i) + "]"
		if !slices.Contains(knownGuns, p.Gun.Type) {
			return errs.Invalid(field+".gun.type", "unknown gun type %q (known: %v)", p.Gun.Type, knownGuns)
		}
		paths := []struct{ field, path string }{{".ammo.file", p.Ammo.File}, {".gun.descriptorSet", p.Gun.DescriptorSet}}
		if t := p.Gun.TLS; t != nil {
			paths = append(paths, struct{ field, path string }{".gun.tls.caFile", t.CAFile},
				struct{ field, path string }{".gun.tls.certFile", t.CertFile}, struct{ field, path string }{".gun.tls.keyFile", t.KeyFile})
		}
		for _, f := range paths {
			if f.path == "" {
				continue
			}
			if filesDir == "" {
				return errs.Invalid(field+f.field, "%q: LoadTests may name files only when the runners have a files directory "+
					"(capstan run --loadtest-dir DIR); use inline ammo or start them with --loadtest-dir", f.path)
			}
			if err := files.CheckLocal(f.path); err != nil {
				return errs.Invalid(field+f.field, "%v", err)
			}
			if root == nil {
				// Best effort: a directory this process cannot open is
				// the runners' to report.
				root, _ = files.OpenRoot(filesDir)
			}
			if root != nil {
				if err := root.Check(f.path); err != nil {
					return errs.Invalid(field+f.field, "%v", err)
				}
			}
		}
	}
	return nil
}

// Phase is where a LoadTest (or a LoadTestPart) is in its life.
type Phase string

// Phases. Succeeded, Failed and Cancelled are final.
const (
	// PhasePending: accepted, not started (waiting for members).
	PhasePending Phase = "Pending"
	// PhaseRunning: parts assigned; shots are fired from the start time.
	PhaseRunning Phase = "Running"
	// PhaseSucceeded: the run completed and passed its thresholds.
	PhaseSucceeded Phase = "Succeeded"
	// PhaseFailed: the spec is invalid, the run broke off, or it
	// completed and failed its thresholds (see reason and verdict).
	PhaseFailed Phase = "Failed"
	// PhaseCancelled: stopped by spec.cancel.
	PhaseCancelled Phase = "Cancelled"
)

// Final reports whether p is Succeeded, Failed or Cancelled.
func (p Phase) Final() bool {
	return p == PhaseSucceeded || p == PhaseFailed || p == PhaseCancelled
}

// Condition types.
const (
	// ConditionReady is True once the test is accepted and its parts are
	// assigned to members; False with ReasonInvalidSpec or
	// ReasonWaitingForMembers.
	ConditionReady = "Ready"
	// ConditionComplete is True once the test ended; its reason is the
	// status reason (Passed, ThresholdsFailed, Cancelled, …).
	ConditionComplete = "Complete"
)

// Reasons of phases and conditions.
const (
	// ReasonWaitingForMembers: fewer live members than spec.parallelism.
	ReasonWaitingForMembers = "WaitingForMembers"
	// ReasonInvalidSpec: the spec is invalid; status.message names the
	// field. A corrected spec is run.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonAssigned: the parts are assigned to members.
	ReasonAssigned = "Assigned"
	// ReasonRunning: the test runs.
	ReasonRunning = "Running"
	// ReasonPassed: the test completed and passed.
	ReasonPassed = "Passed"
	// ReasonThresholdsFailed: the test completed and failed a threshold.
	ReasonThresholdsFailed = "ThresholdsFailed"
	// ReasonAutostopped: an autostop rule stopped the test.
	ReasonAutostopped = "Autostopped"
	// ReasonCancelled: spec.cancel stopped the test.
	ReasonCancelled = "Cancelled"
	// ReasonInterrupted: a part's runner stopped or disappeared before
	// the part ended (process stopped, member lost).
	ReasonInterrupted = "Interrupted"
	// ReasonRunFailed: a part could not run (for example a gun that
	// cannot be built).
	ReasonRunFailed = "RunFailed"
	// ReasonPartLost: a part disappeared or was never created in time.
	ReasonPartLost = "PartLost"
)

// LoadTestStatus is a LoadTest's observed state.
type LoadTestStatus struct {
	// ObservedGeneration is the last generation the controller acted on.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// RunGeneration is the generation whose spec runs (or ran); later
	// spec changes other than cancel do not change the run.
	RunGeneration int64 `json:"runGeneration,omitempty"`
	// Phase is Pending, Running, Succeeded, Failed or Cancelled.
	Phase Phase `json:"phase,omitempty"`
	// Reason is a CamelCase word for the phase (Reason* constants).
	Reason string `json:"reason,omitempty"`
	// Message explains the phase for humans; for an invalid spec it
	// names the field.
	Message string `json:"message,omitempty"`
	// StartTime is when the shots start (the start common to all
	// parts).
	StartTime time.Time `json:"startTime,omitzero"`
	// EndTime is when the test ended.
	EndTime time.Time `json:"endTime,omitzero"`
	// Parts are the parts of the run and where they run.
	Parts []PartRef `json:"parts,omitempty"`
	// Progress is a live view of the run, refreshed about every second.
	Progress *Progress `json:"progress,omitempty"`
	// Results are the numbers of the whole run (merged from the parts),
	// set when it ended.
	Results *Results `json:"results,omitempty"`
	// Verdict judges the run against its thresholds and autostop rules.
	Verdict *aggregate.Verdict `json:"verdict,omitempty"`
	// Conditions are Ready and Complete.
	Conditions []meta.Condition `json:"conditions,omitempty"`
}

// PartRef names one part of a run.
type PartRef struct {
	// Index is the part's share index.
	Index int64 `json:"index"`
	// Name is the LoadTestPart's name.
	Name string `json:"name"`
	// Member is the member running it.
	Member string `json:"member"`
	// Phase is the part's phase as last seen; empty until the part was
	// seen.
	Phase Phase `json:"phase,omitempty"`
}

// Progress is a live view of a run.
type Progress struct {
	// UpdateTime is when the numbers were taken.
	UpdateTime time.Time `json:"updateTime,omitzero"`
	// Elapsed is the time since the start.
	Elapsed config.Duration `json:"elapsed"`
	// TargetRPS is the schedules' current rate.
	TargetRPS float64 `json:"targetRPS"`
	// RPS is the number of shots completed in the last full second.
	RPS float64 `json:"rps"`
	// InFlight is the number of shots being fired.
	InFlight int64 `json:"inFlight"`
	// Instances is the number of running instances.
	Instances int64 `json:"instances"`
	// Requests is the number of shots completed so far.
	Requests int64 `json:"requests"`
	// Errors is the number of failed shots so far.
	Errors int64 `json:"errors"`
	// P50 and P99 are the corrected latency quantiles so far. Across
	// parts they are the highest of the parts' (exact quantiles are in the
	// results).
	P50 config.Duration `json:"p50"`
	// P99 is the corrected 99th percentile so far.
	P99 config.Duration `json:"p99"`
	// Dropped counts samples the aggregator could not take.
	Dropped int64 `json:"dropped,omitempty"`
	// Discarded counts shots skipped for being too late.
	Discarded int64 `json:"discarded,omitempty"`
}

// Quantiles summarize a latency distribution.
type Quantiles struct {
	// P50 is the median.
	P50 config.Duration `json:"p50"`
	// P90 is the 90th percentile.
	P90 config.Duration `json:"p90"`
	// P99 is the 99th percentile.
	P99 config.Duration `json:"p99"`
	// P999 is the 99.9th percentile.
	P999 config.Duration `json:"p999"`
	// Max is the largest value.
	Max config.Duration `json:"max"`
	// Mean is the mean.
	Mean config.Duration `json:"mean"`
}

// Results are the numbers of a finished run.
type Results struct {
	// Stop says why the run ended: done, duration, autostop or canceled
	// (across parts: the first of autostop, canceled, duration, done that
	// any part reports).
	Stop string `json:"stop,omitempty"`
	// Elapsed is how long the run took.
	Elapsed config.Duration `json:"elapsed"`
	// Requests is the number of completed shots.
	Requests int64 `json:"requests"`
	// Errors is the number of failed shots.
	Errors int64 `json:"errors"`
	// RPS is the achieved rate: requests per second of elapsed time.
	RPS float64 `json:"rps"`
	// Latency is measured from each shot's intended time (corrected for
	// coordinated omission).
	Latency Quantiles `json:"latency"`
	// ServiceTime is measured from each shot's send time.
	ServiceTime Quantiles `json:"serviceTime"`
	// Lateness is how late shots were sent after their intended time.
	Lateness Quantiles `json:"lateness"`
	// Overdue counts shots sent later than overdueAfter.
	Overdue int64 `json:"overdue"`
	// Discarded counts shots skipped for being too late.
	Discarded int64 `json:"discarded"`
	// Dropped counts samples the aggregator could not take.
	Dropped int64 `json:"dropped"`
	// Interrupted counts shots canceled in flight (cancel, stop).
	Interrupted int64 `json:"interrupted"`
	// BytesOut and BytesIn sum request and response sizes.
	BytesOut int64 `json:"bytesOut"`
	// BytesIn sums response sizes.
	BytesIn int64 `json:"bytesIn"`
	// ErrorsByClass counts failed shots by outcome class (status,
	// timeout, conn, …).
	ErrorsByClass map[string]int64 `json:"errorsByClass,omitempty"`
	// Codes counts shots by result code ("http 200", "grpc Unavailable",
	// or the class of failures without a code).
	Codes map[string]int64 `json:"codes,omitempty"`
	// Tags summarize each ammo tag (at most MaxTags of them).
	Tags map[string]TagResults `json:"tags,omitempty"`
	// TagsOmitted counts tags left out beyond MaxTags.
	TagsOmitted int `json:"tagsOmitted,omitempty"`
	// Histograms hold the lossless latency and service-time histograms.
	Histograms Histograms `json:"histograms"`
}

// MaxTags bounds the tags a result lists.
const MaxTags = 32

// TagResults summarize the shots of one tag.
type TagResults struct {
	// Requests is the tag's number of shots.
	Requests int64 `json:"requests"`
	// Errors is the tag's number of failed shots.
	Errors int64 `json:"errors"`
	// P50 is the tag's corrected median latency.
	P50 config.Duration `json:"p50"`
	// P99 is the tag's corrected 99th percentile.
	P99 config.Duration `json:"p99"`
}

// Histograms are HdrHistogram V2 compressed, base64 encodings (as
// aggregate.Histogram.Encode writes them) of microsecond values; decode
// with aggregate.DecodeHistogram.
type Histograms struct {
	// Latency is the corrected latency histogram.
	Latency string `json:"latency,omitempty"`
	// Service is the service time histogram.
	Service string `json:"service,omitempty"`
}

// LoadTestPart is one share of a LoadTest's load, assigned to one member,
// which runs it and writes its results here. The LoadTest controller
// creates them (owned by the LoadTest) and merges their results.
type LoadTestPart struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec is the share to run.
	Spec LoadTestPartSpec `json:"spec"`
	// Status is the runner's report.
	Status LoadTestPartStatus `json:"status,omitzero"`
}

// LoadTestPartSpec is the share of a test one member runs.
type LoadTestPartSpec struct {
	// LoadTest is the name of the LoadTest the part belongs to.
	LoadTest string `json:"loadTest"`
	// Member is the member that runs the part.
	Member string `json:"member"`
	// Share is the part of every schedule this part fires.
	Share schedule.Share `json:"share"`
	// StartAt is the wall-clock start common to all parts; zero starts
	// at once.
	StartAt time.Time `json:"startAt,omitzero"`
	// Test is the LoadTest's configuration, as it was when the run was
	// planned.
	Test config.Spec `json:"test"`
	// Cancel asks the runner to stop the part.
	Cancel bool `json:"cancel,omitempty"`
}

// LoadTestPartStatus is a runner's report on its part.
type LoadTestPartStatus struct {
	// Phase is Pending (empty), Running, Succeeded (the run ended on its
	// own: done, duration or autostop), Failed or Cancelled.
	Phase Phase `json:"phase,omitempty"`
	// Reason is a CamelCase word for the phase.
	Reason string `json:"reason,omitempty"`
	// Message explains a failure.
	Message string `json:"message,omitempty"`
	// StartTime is when the part's engine started.
	StartTime time.Time `json:"startTime,omitzero"`
	// EndTime is when it ended.
	EndTime time.Time `json:"endTime,omitzero"`
	// Progress is the part's live view.
	Progress *Progress `json:"progress,omitempty"`
	// Stop says why the part's run ended (engine.Stop*).
	Stop string `json:"stop,omitempty"`
	// Interrupted counts shots canceled in flight.
	Interrupted int64 `json:"interrupted,omitempty"`
	// Failures are the part's verdict failures ("stopped: …" for an
	// autostop).
	Failures []string `json:"failures,omitempty"`
	// Result is the part's aggregate.Result as JSON, histograms in their
	// lossless encoding, without the per-second timeline (and without
	// per-tag numbers beyond MaxTags tags).
	Result json.RawMessage `json:"result,omitempty"`
}
