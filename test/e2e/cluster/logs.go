package cluster

import (
	"bytes"
	"context"
	"strings"
	"sync"

	"github.com/capstanhq/capstan/pkg/errs"
)

// logBuffer collects a process's output and lets callers wait for a line.
// It is safe for concurrent use.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newLogBuffer() *logBuffer { return &logBuffer{changed: make(chan struct{})} }

// Write implements io.Writer.
func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

// String returns everything written.
func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// waitLine waits for a complete line containing substr and returns it; it
// fails when ctx ends or exited closes first.
func (l *logBuffer) waitLine(ctx context.Context, substr string, exited <-chan struct{}) (string, error) {
	for {
		l.mu.Lock()
		text := l.buf.String()
		ch := l.changed
		l.mu.Unlock()
		if i := strings.Index(text, substr); i >= 0 {
			if j := strings.IndexByte(text[i:], '\n'); j >= 0 {
				start := strings.LastIndexByte(text[:i], '\n') + 1
				return text[start : i+j], nil
			}
		}
		select {
		case <-ch:
		case <-exited:
			return "", errs.New(errs.Aborted, "process exited before printing %q", substr)
		case <-ctx.Done():
			return "", errs.Wrap(errs.DeadlineExceeded, ctx.Err(), "waiting for %q", substr)
		}
	}
}
