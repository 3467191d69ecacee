// Package testlog holds what tests use to read a server's log. It is a
// package of its own, importing nothing of callsig's, so that the tests
// inside db/postgres (which testkit, through the app, imports) can use it
// too.
package testlog

import (
	"strings"
	"sync"
)

// Buffer collects a server's log lines, written by the server's
// goroutines and read by the test's.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Has says whether anything written so far contains s.
func (l *Buffer) Has(s string) bool { return strings.Contains(l.String(), s) }
