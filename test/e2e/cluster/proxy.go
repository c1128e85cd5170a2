package cluster

import (
	"io"
	"net"
	"sync"
)

// Proxy forwards TCP connections from a loopback port to a target, and can
// cut them like a network partition: while cut, bytes in both directions
// are dropped and new connections are accepted but never reach the target.
// Restore heals the cut and resets the connections that lived through it
// (their streams lost bytes); new connections work again.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	cut    bool
	closed bool
	conns  map[*proxyConn]struct{}
	wg     sync.WaitGroup
}

type proxyConn struct {
	client, server net.Conn // server is nil for a connection accepted while cut
	cutSeen        bool     // lived through a cut
}

// NewProxy listens on 127.0.0.1 (a free port) and forwards to target.
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[*proxyConn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listen address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		pc := &proxyConn{client: c}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		cut := p.cut
		pc.cutSeen = cut
		p.conns[pc] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(pc, cut)
	}
}

func (p *Proxy) serve(pc *proxyConn, cut bool) {
	defer p.wg.Done()
	defer p.forget(pc)
	if cut {
		// A blackhole: read and drop until the connection is reset.
		_, _ = io.Copy(io.Discard, pc.client)
		_ = pc.client.Close()
		return
	}
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = pc.client.Close()
		return
	}
	p.mu.Lock()
	pc.server = s
	if p.closed {
		p.mu.Unlock()
		_ = s.Close()
		_ = pc.client.Close()
		return
	}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { p.pipe(s, pc.client); done <- struct{}{} }()
	go func() { p.pipe(pc.client, s); done <- struct{}{} }()
	<-done
	_ = s.Close()
	_ = pc.client.Close()
	<-done
}

// pipe copies src to dst, dropping what it reads while the proxy is cut.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			cut := p.cut
			p.mu.Unlock()
			if !cut {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) forget(pc *proxyConn) {
	p.mu.Lock()
	delete(p.conns, pc)
	p.mu.Unlock()
}

// Cut starts dropping all traffic.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for pc := range p.conns {
		pc.cutSeen = true
	}
}

// Restore stops dropping traffic and resets the connections that lived
// through the cut.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.cut = false
	var stale []net.Conn
	for pc := range p.conns {
		if pc.cutSeen {
			stale = append(stale, pc.client)
			if pc.server != nil {
				stale = append(stale, pc.server)
			}
		}
	}
	p.mu.Unlock()
	for _, c := range stale {
		closeConn(c)
	}
}

// closeConn resets a TCP connection (no lingering FIN handshake).
func closeConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	conns := make([]net.Conn, 0, 2*len(p.conns))
	for pc := range p.conns {
		conns = append(conns, pc.client)
		if pc.server != nil {
			conns = append(conns, pc.server)
		}
	}
	p.mu.Unlock()
	err := p.ln.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	p.wg.Wait()
	return err
}
