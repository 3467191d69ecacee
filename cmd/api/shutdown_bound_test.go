package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"callsig/handlers"
	"callsig/internal/pgtest"
	"callsig/internal/testkit"
	"callsig/internal/wait"
	"callsig/webhooks"
)

// The shutdown's steps (the requests in flight, the background parts,
// the database close) each waited the whole CALLSIG_SHUTDOWN_TIMEOUT, one
// after the other: an operator who set 10 s for a 15 s termination grace
// period got up to 30 s, and a SIGKILL midway. Here every step is stuck:
// a request whose body never ends, a webhook attempt to a receiver that
// hangs (whose release, at the stop, is a write), an event stream open,
// and PostgreSQL silent since the signal. The whole shutdown must end
// within the timeout (and a little scheduling slack), exit status 1.
func TestShutdownIsBoundedAsAWhole(t *testing.T) {
	const timeout = 2 * time.Second
	entered := make(chan struct{}, 16)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		entered <- struct{}{}
		<-r.Context().Done()
	}))
	defer receiver.Close()

	dsn := pgtest.NewDatabase(t)
	proxy := testkit.StartTCPProxy(t, "127.0.0.1:5432")
	dsn = strings.Replace(dsn, "127.0.0.1:5432", proxy.Addr, 1)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &logBuffer{}
	args := []string{"-addr", "127.0.0.1:0", "-db", dsn, "-shutdown-timeout", timeout.String(),
		"-webhook-url", receiver.URL, "-webhook-secret", webhooks.NewSecret(), "-webhook-allow-private"}
	done := make(chan error, 1)
	go func() { done <- serve(ctx, func() {}, args, secretEnv, logs) }()
	addr := listening(t, logs)
	tok, err := handlers.MintToken([]byte(testSecret), handlers.TokenRequest{UserID: "alice", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	// An event stream, open through the shutdown.
	streamReq, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/events", nil)
	streamReq.Header.Set("Authorization", "Bearer "+tok)
	stream, err := http.DefaultClient.Do(streamReq)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	var streamEnded atomic.Bool
	go func() {
		_, _ = io.Copy(io.Discard, stream.Body)
		streamEnded.Store(true)
	}()

	// A call: its webhook attempt hangs at the receiver.
	inviteBob(t, addr, tok)
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatalf("no webhook attempt reached the receiver\n%s", logs)
	}

	// A request in flight whose body never ends.
	requestInFlight(t, addr, tok)

	proxy.Freeze()
	start := time.Now()
	cancel()
	stopErr := served(t, done, 10*timeout, logs)
	took := time.Since(start)
	t.Logf("shutdown took %v (timeout %v): %v", took, timeout, stopErr)
	if stopErr == nil {
		t.Errorf("serve returned nil after steps were cut short, want an error (exit status 1)")
	}
	if limit := timeout + time.Second; took > limit {
		t.Fatalf("the shutdown took %v, more than its timeout %v (and a second's slack)\n%s", took, timeout, logs)
	}
	if !wait.Until(5*time.Second, streamEnded.Load) {
		t.Errorf("the event stream stayed open after the shutdown")
	}
}
