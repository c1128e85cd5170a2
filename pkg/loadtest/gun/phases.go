package gun

import (
	"context"
	"net/http/httptrace"
	"sync/atomic"
	"time"
)

// phaseTrace times the phases of one net/http request from its trace
// callbacks. net/http calls them from its own goroutines, WroteRequest
// even after the response came back, so the times are atomic and a trace
// serves one request only.
type phaseTrace struct {
	base time.Time
	// Times since base plus one, so that 0 means "not seen".
	getConn, gotConn, wrote, first atomic.Int64
	reused                         atomic.Bool
}

// withPhaseTrace returns ctx carrying a new phase trace, and the trace.
func withPhaseTrace(ctx context.Context) (context.Context, *phaseTrace) {
	p := &phaseTrace{base: time.Now()}
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GetConn: func(string) {
			// HTTP/2 asks for a connection again once the outer transport
			// dialed one: the first request is the one that counts.
			p.getConn.CompareAndSwap(0, p.now())
		},
		GotConn: func(info httptrace.GotConnInfo) {
			if p.gotConn.CompareAndSwap(0, p.now()) {
				p.reused.Store(info.Reused)
			}
		},
		WroteRequest: func(httptrace.WroteRequestInfo) { p.wrote.CompareAndSwap(0, p.now()) },
		GotFirstResponseByte: func() {
			p.first.CompareAndSwap(0, p.now())
		},
	}), p
}

func (p *phaseTrace) now() int64 { return int64(time.Since(p.base)) + 1 }

// phases returns the request's phases in nanoseconds as of now, the end of
// the response: connect from asking for a connection to getting a new one
// (to now when none came: the shot failed connecting; 0 for a reused
// one), send from getting the connection to the request written, receive
// from the first byte of the response to now.
func (p *phaseTrace) phases() (connect, send, receive int64) {
	end := p.now()
	get, got, wrote, first := p.getConn.Load(), p.gotConn.Load(), p.wrote.Load(), p.first.Load()
	switch {
	case get == 0:
	case got == 0:
		connect = end - get
	case !p.reused.Load():
		connect = max(got-get, 0)
	}
	if got != 0 && wrote >= got {
		send = wrote - got
	}
	if first != 0 {
		receive = max(end-first, 0)
	}
	return connect, send, receive
}
