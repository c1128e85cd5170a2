package cluster

import (
	"context"
	"testing"
	"time"
)

func TestLogBufferWaitLine(t *testing.T) {
	l := newLogBuffer()
	exited := make(chan struct{})
	got := make(chan string, 1)
	go func() {
		line, err := l.waitLine(context.Background(), "ready", exited)
		if err != nil {
			t.Error(err)
		}
		got <- line
	}()
	_, _ = l.Write([]byte("starting\nop"))
	_, _ = l.Write([]byte("erator rea"))
	select {
	case line := <-got:
		t.Fatalf("returned %q before the line was complete", line)
	case <-time.After(50 * time.Millisecond):
	}
	_, _ = l.Write([]byte("dy replica=r1\nmore\n"))
	select {
	case line := <-got:
		if line != "operator ready replica=r1" {
			t.Errorf("line = %q", line)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waitLine did not return")
	}
}

func TestLogBufferWaitLineEnds(t *testing.T) {
	l := newLogBuffer()
	exited := make(chan struct{})
	close(exited)
	if _, err := l.waitLine(context.Background(), "ready", exited); err == nil {
		t.Error("no error after the process exited")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := l.waitLine(ctx, "ready", make(chan struct{})); err == nil {
		t.Error("no error after the context ended")
	}
}
