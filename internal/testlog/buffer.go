package testkit

import (
	"strings"
	"sync"
)

// LogBuffer collects a server's log lines, written by the server's
// goroutines and read by the test's.
type LogBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Has says whether anything written so far contains s.
func (l *LogBuffer) Has(s string) bool { return strings.Contains(l.String(), s) }
