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
// time is Unix seconds with milliseconds; intervals are microseconds. The
// engine does not split a shot into connect/send/receive, so those are 0 and
// latency and interval_event equal interval_real. By default time is the
// send time and interval_real the service time, as pandora writes them;
// with corrected set, time is the intended time and interval_real the
// latency from it (corrected for coordinated omission). net_code is the
// errno of a network failure (110 for timeouts), proto_code the HTTP status
// or gRPC code.
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
	for _, v := range [...]int64{us, 0, 0, us, 0, us, s.BytesOut, s.BytesIn, int64(s.Errno), int64(s.Code)} {
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
