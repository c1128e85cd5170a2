package report

import (
	"bufio"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/capstanhq/capstan/pkg/loadtest/aggregate"
)

// Phout is a sink writing pandora's phout format, the input of Yandex
// Tank's pipelines: one tab-separated line per sample,
//
//	time  tag  interval_real  connect_time  send_time  latency  receive_time  interval_event  size_out  size_in  net_code  proto_code
//
// time is Unix seconds with milliseconds; intervals are microseconds. By
// default time is the send time and interval_real the service time, as
// pandora writes them; with corrected set, time is the intended time and
// interval_real the latency from it (corrected for coordinated omission).
// net_code is the errno of a network failure (110 for timeouts),
// proto_code the HTTP status or gRPC code.
//
// connect_time, send_time and receive_time are the shot's phases
// (aggregate.Sample): the dial and TLS handshake of a connection the shot
// opened (0 on a reused one), the writing of the request, and the time
// from the first byte of the response to its last. latency is the rest,
// so that connect_time + send_time + latency + receive_time =
// interval_real, as Yandex Tank expects: the wait for the first byte,
// plus the gun's own work around the request (microseconds) and, with
// corrected set, the shot's lateness. interval_event equals interval_real.
//
// Which guns split a shot: the lean HTTP/1.1 gun always; the net/http gun
// (TLS, HTTP/2, h2c, client std) and the scenario gun when a phout sink is
// in the run (they trace the request, which allocates), the scenario
// giving each step's phases on the step's line and their sums on the
// shot's. The gRPC gun does not: its phases are 0 and latency equals
// interval_real. Failed shots have the phases they got through (a failed
// dial is all connect_time).
type Phout struct {
	w         *bufio.Writer
	c         io.Closer
	start     time.Time
	corrected bool
	buf       []byte
}

// NewPhout returns a phout sink writing to w. The aggregator tells it the
// run's start (SetStart). If w is an io.Closer, Close closes it.
func NewPhout(w io.Writer, corrected bool) *Phout {
	p := &Phout{w: bufio.NewWriterSize(w, 256<<10), corrected: corrected}
	if c, ok := w.(io.Closer); ok {
		p.c = c
	}
	return p
}

// WantsPhases reports true: phout lines carry the phases of shots, so guns
// that measure them only on request do (see aggregate.Sink).
func (p *Phout) WantsPhases() bool { return true }

// SetStart sets the wall-clock start of the run that sample times are
// relative to.
func (p *Phout) SetStart(t time.Time) { p.start = t }

// Write appends s's line.
func (p *Phout) Write(s *aggregate.Sample) error {
	ts, interval := s.Sent, s.Service()
	if p.corrected {
		ts, interval = s.Intended, s.Latency()
	}
	unixMs := p.start.Add(time.Duration(ts)).UnixMilli()
	b := p.buf[:0]
	b = strconv.AppendInt(b, unixMs/1000, 10)
	b = append(b, '.')
	frac := unixMs % 1000
	b = append(b, byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
	b = append(b, '\t')
	b = appendTag(b, s.Tag)
	us := max(interval/1000, 0)
	connect, send, receive := max(s.Connect/1000, 0), max(s.Send/1000, 0), max(s.Receive/1000, 0)
	// The phases are measured inside the interval, so they fit in it; if
	// they do not, the interval grows to hold them.
	us = max(us, connect+send+receive)
	latency := us - connect - send - receive
	for _, v := range [...]int64{us, connect, send, latency, receive, us, s.BytesOut, s.BytesIn, int64(s.Errno), int64(s.Code)} {
		b = append(b, '\t')
		b = strconv.AppendInt(b, v, 10)
	}
	b = append(b, '\n')
	p.buf = b
	_, err := p.w.Write(b)
	return err
}

func appendTag(b []byte, tag string) []byte {
	if tag == "" {
		return append(b, '-')
	}
	if !strings.ContainsAny(tag, "\t\n\r") {
		return append(b, tag...)
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		if c == '\t' || c == '\n' || c == '\r' {
			c = '_'
		}
		b = append(b, c)
	}
	return b
}

// Close flushes the lines and closes the writer if it is a Closer.
func (p *Phout) Close() error {
	err := p.w.Flush()
	if p.c != nil {
		if cerr := p.c.Close(); err == nil {
			err = cerr
		}
	}
	return err
}
