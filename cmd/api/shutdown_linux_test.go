package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"callsig/internal/testkit"
)

// A client that asks for answers and reads none must not hold a graceful
// stop to its timeout and make it fail (exit 1): the answers still being
// written are cut a little before the requests' end (App.CutAnswersAt). A
// review stopped a server so: 15.5 s, the whole timeout, then an error.
func TestUnreadAnswerDoesNotHoldTheStop(t *testing.T) {
	t.Run("large answers", func(t *testing.T) {
		// Blocked in the handler's write.
		unreadAnswersHoldNoStop(t, 100, "/openapi.yaml")
	})
	t.Run("small answers", func(t *testing.T) {
		// 404s of 1.6 KB: net/http writes such an answer after its
		// handler returned, where a registry of handlers (a first
		// version) no longer saw it (a review).
		unreadAnswersHoldNoStop(t, 5000, "/"+strings.Repeat("a", 1500))
	})
}

// unreadAnswersHoldNoStop pipelines n requests for path on a connection
// that reads nothing, then stops the server: the stop must end cleanly,
// within its timeout.
func unreadAnswersHoldNoStop(t *testing.T, n int, path string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &logBuffer{}
	args := []string{"-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "callsig.db"), "-shutdown-timeout", "3s"}
	done := make(chan error, 1)
	go func() { done <- serve(ctx, func() {}, args, secretEnv, logs) }()
	addr := listening(t, logs)

	conn, err := testkit.DialNotReading(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Far more than the socket buffers hold: the server's write blocks.
	var reqs strings.Builder
	for range n {
		fmt.Fprintf(&reqs, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, addr)
	}
	// Written while the server answers: the server stops reading once
	// its own writes block, and so would this write.
	go func() { _, _ = conn.Write([]byte(reqs.String())) }()
	time.Sleep(time.Second) // the buffers fill within milliseconds
	start := time.Now()
	cancel()
	if err := served(t, done, 3*time.Second+5*time.Second, logs); err != nil {
		t.Fatalf("a client reading nothing failed the stop after %v: %v\n%s", time.Since(start), err, logs)
	}
}
