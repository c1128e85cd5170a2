package config

import (
	"encoding/json"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/ammo"
)

// Duration is a time.Duration written as a Go duration string ("1m30s")
// in YAML and JSON. A bare number is read as seconds.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var f float64
		if err2 := json.Unmarshal(b, &f); err2 != nil {
			return errs.New(errs.InvalidArgument, "want a duration such as \"10s\", got %s", b)
		}
		*d = Duration(f * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return errs.New(errs.InvalidArgument, "want a duration such as \"10s\", got %q", s)
	}
	*d = Duration(v)
	return nil
}

// Spec is a load test: the body of a YAML config file and the spec of a
// LoadTest resource.
type Spec struct {
	// Pools run side by side, each with its own gun, ammo and schedule.
	Pools []Pool `json:"pools"`
	// Thresholds are rules deciding the verdict ("p99 > 200ms", "error_rate
	// > 5%"); rules with a window ("p99 > 200ms for 10s") stop the run
	// early. See aggregate.Rule for the syntax.
	Thresholds []string `json:"thresholds,omitempty"`
	// Duration caps the run; 0 runs until every pool is done.
	Duration Duration `json:"duration,omitempty"`
	// OverdueAfter is the lateness beyond which a shot counts as overdue
	// (and is discarded by pools with discardOverflow); default 10ms.
	OverdueAfter Duration `json:"overdueAfter,omitempty"`
	// Report names files written at the end of the run.
	Report Report `json:"report,omitempty"`
	// Timer chooses how instances wait for their shots' intended times:
	// "precise" (the default) wakes them with a kernel timer (timerfd on
	// Linux) on a grid of timerResolution, so a shot is at most that late
	// and an idle generator wakes at most once per resolution; "coarse"
	// uses the Go runtime's timers, which wake an idle process with
	// millisecond granularity (shots up to about 1 ms late, more under
	// load) at the least CPU.
	Timer string `json:"timer,omitempty"`
	// TimerResolution is the precise timer's grid; default 500µs. Smaller
	// is more exact and costs a wake-up per shot at moderate rates.
	TimerResolution Duration `json:"timerResolution,omitempty"`
}

// Report names the run's report files; empty names are not written.
type Report struct {
	// JSON is the path of the JSON summary.
	JSON string `json:"json,omitempty"`
	// HTML is the path of the HTML report with charts.
	HTML string `json:"html,omitempty"`
	// Phout is the path of a pandora-compatible phout file of all pools.
	Phout string `json:"phout,omitempty"`
	// PhoutCorrected writes the intended time as each line's timestamp and
	// the corrected latency as its interval, instead of the send time and
	// the service time.
	PhoutCorrected bool `json:"phoutCorrected,omitempty"`
}

// Pool is a group of instances sharing a gun type, ammo and schedule.
type Pool struct {
	// ID names the pool; it prefixes nothing but appears in reports.
	ID string `json:"id"`
	// Gun says how to shoot.
	Gun GunSpec `json:"gun"`
	// Ammo says what to shoot.
	Ammo ammo.Spec `json:"ammo"`
	// RPS is the schedule of shots: segments run one after another.
	RPS []ScheduleSpec `json:"rps"`
	// Startup is the schedule on which instances start; default: all
	// instances at once.
	Startup []ScheduleSpec `json:"startup,omitempty"`
	// Instances is the most instances (concurrent shots) the pool runs.
	Instances int `json:"instances"`
	// DiscardOverflow skips shots that are already later than
	// overdueAfter when an instance gets to them, instead of firing them
	// late. Off by default: late shots are fired and their lateness shows
	// in the corrected latency, which is the honest measure of a system
	// that cannot keep up. Discarded shots are counted.
	DiscardOverflow bool `json:"discardOverflow,omitempty"`
}

// ScheduleSpec is one segment of a schedule, as in pandora.
type ScheduleSpec struct {
	// Type is const, line, step, once or unlimited.
	Type string `json:"type"`
	// Ops is the rate of a const segment (per second; fractions allowed).
	Ops float64 `json:"ops,omitempty"`
	// From and To are the rates at the ends of a line or step segment.
	From float64 `json:"from,omitempty"`
	// To is the final rate of a line or step segment.
	To float64 `json:"to,omitempty"`
	// Step is the rate increment of a step segment.
	Step float64 `json:"step,omitempty"`
	// Duration is the length of a segment (of each stair of a step).
	Duration Duration `json:"duration,omitempty"`
	// Times is the token count of a once segment.
	Times int64 `json:"times,omitempty"`
}

// GunSpec configures a pool's gun. Fields that a gun type does not use must
// be left out; custom guns read Options.
type GunSpec struct {
	// Type is http, grpc, scenario or a type registered in Go.
	Type string `json:"type"`
	// Target is the server: "http://host:port", "https://host:port" for
	// HTTP guns, "host:port" for gRPC.
	Target string `json:"target,omitempty"`
	// Timeout bounds each request; default 10s.
	Timeout Duration `json:"timeout,omitempty"`
	// ConnectTimeout bounds dialing; default the timeout.
	ConnectTimeout Duration `json:"connectTimeout,omitempty"`
	// HTTP2 speaks HTTP/2 over TLS (https targets).
	HTTP2 bool `json:"http2,omitempty"`
	// H2C speaks HTTP/2 without TLS (http targets).
	H2C bool `json:"h2c,omitempty"`
	// Client picks the HTTP/1.1 client: "lean" (default for http targets:
	// a keep-alive client without per-request allocations) or "std"
	// (net/http).
	Client string `json:"client,omitempty"`
	// Headers are sent with every request, before the ammo's.
	Headers ammo.Headers `json:"headers,omitempty"`
	// TLS configures TLS; certificates are verified unless
	// insecureSkipVerify is set.
	TLS *TLSSpec `json:"tls,omitempty"`
	// DescriptorSet is a protobuf FileDescriptorSet file (protoc
	// --descriptor_set_out --include_imports) describing the gRPC
	// services; without it the gRPC gun asks the server's reflection
	// service.
	DescriptorSet string `json:"descriptorSet,omitempty"`
	// Steps are the requests of a scenario gun, made in order for each
	// ammo.
	Steps []StepSpec `json:"steps,omitempty"`
	// Options are the settings of a custom gun.
	Options json.RawMessage `json:"options,omitempty"`
}

// TLSSpec configures TLS for a gun.
type TLSSpec struct {
	// CAFile is a PEM bundle of roots to trust instead of the system's.
	CAFile string `json:"caFile,omitempty"`
	// CertFile and KeyFile are a client certificate and key (PEM).
	CertFile string `json:"certFile,omitempty"`
	// KeyFile is the client certificate's key (PEM).
	KeyFile string `json:"keyFile,omitempty"`
	// ServerName overrides the name verified and sent in SNI.
	ServerName string `json:"serverName,omitempty"`
	// InsecureSkipVerify turns certificate verification off.
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
}

// StepSpec is one request of a scenario. Method, URI, headers and body may
// use ${name} placeholders, filled from the ammo's vars and from values
// extracted by earlier steps.
type StepSpec struct {
	// Name tags the step's samples.
	Name string `json:"name"`
	// Method is the HTTP method; default GET.
	Method string `json:"method,omitempty"`
	// URI is the request path (or absolute URL).
	URI string `json:"uri"`
	// Headers are added to the request.
	Headers ammo.Headers `json:"headers,omitempty"`
	// Body is the request body.
	Body string `json:"body,omitempty"`
	// Extract sets variables from the response.
	Extract []ExtractSpec `json:"extract,omitempty"`
	// Assert are checks on the response; a failed check fails the step
	// (class "assertion") and ends the scenario for this ammo.
	Assert *AssertSpec `json:"assert,omitempty"`
}

// ExtractSpec takes one variable from a response: from a JSON body field
// (dot path, numbers index arrays: "items.0.id"), a header, or the first
// group of a regular expression over the body. Exactly one source is set.
type ExtractSpec struct {
	// Var is the variable to set.
	Var string `json:"var"`
	// JSON is a dot path into a JSON body.
	JSON string `json:"json,omitempty"`
	// Header is a response header name.
	Header string `json:"header,omitempty"`
	// Regex is a regular expression with one group, matched on the body.
	Regex string `json:"regex,omitempty"`
}

// AssertSpec are checks on a scenario step's response.
type AssertSpec struct {
	// Status lists acceptable status codes; default any below 400.
	Status []int `json:"status,omitempty"`
	// BodyContains must occur in the body.
	BodyContains string `json:"bodyContains,omitempty"`
}
