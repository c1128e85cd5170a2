package loadtesttest

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// The delays of the slow servers, and how far measured phases may stray
// from them.
const (
	// HeadDelay is how long a slow server waits between reading a
	// request and writing the response head.
	HeadDelay = 30 * time.Millisecond
	// BodyDelay is how long a slow server waits between writing the
	// response head and writing the body.
	BodyDelay = 40 * time.Millisecond
	// Handshake is how long SlowTLSServer takes to answer a ClientHello.
	Handshake = 25 * time.Millisecond
	// PhaseSlack is how far a measured phase may exceed its delay: a
	// loaded machine or the race detector slows the client.
	PhaseSlack = 60 * time.Millisecond
	// PhaseEarly is how far a measured phase may fall short of its delay:
	// the client may see the head late, shortening the receive phase by
	// as much.
	PhaseEarly = 8 * time.Millisecond
)

// RawServer listens on a loopback port until the test ends and answers
// each connection with script(conn's reader, conn), closing the
// connection when script returns. It returns the server's http:// URL.
func RawServer(t testing.TB, script func(*bufio.Reader, net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				script(bufio.NewReader(c), c)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// ReadRequest reads one HTTP request from br and reports whether it could.
func ReadRequest(br *bufio.Reader) bool {
	_, err := http.ReadRequest(br)
	return err == nil
}

// SlowRawServer is a RawServer that answers each request on a connection
// with its head after HeadDelay and its 5-byte body BodyDelay later,
// closing the connection after each response (and saying so in the head)
// when closeEach is set.
func SlowRawServer(t testing.TB, closeEach bool) string {
	return RawServer(t, func(br *bufio.Reader, conn net.Conn) {
		for ReadRequest(br) {
			time.Sleep(HeadDelay)
			head := "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
			if closeEach {
				head += "Connection: close\r\n"
			}
			if _, err := conn.Write([]byte(head + "\r\n")); err != nil {
				return
			}
			time.Sleep(BodyDelay)
			if _, err := conn.Write([]byte("hello")); err != nil || closeEach {
				return
			}
		}
	})
}

// SlowHandler writes the response head after HeadDelay and the 5-byte
// body BodyDelay later.
var SlowHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	time.Sleep(HeadDelay)
	w.Header().Set("Content-Length", "5")
	w.WriteHeader(200)
	w.(http.Flusher).Flush()
	time.Sleep(BodyDelay)
	w.Write([]byte("hello"))
})

// SlowTLSServer serves SlowHandler over TLS, with HTTP/2 when http2 is
// set, taking Handshake to answer a ClientHello. The server is closed when
// the test ends.
func SlowTLSServer(t testing.TB, http2 bool) *httptest.Server {
	srv := httptest.NewUnstartedServer(SlowHandler)
	srv.EnableHTTP2 = http2
	srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		time.Sleep(Handshake)
		return nil, nil
	}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}
