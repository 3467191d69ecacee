package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"callsig/handlers"
	"callsig/internal/wait"
)

// A DELETE /webhooks/{id} waits for the attempts in flight to the
// endpoint; the dispatcher that runs them stops only once the requests
// have finished. A DELETE in flight as the server stops, with an attempt
// to a receiver that is slow to answer, held the shutdown's request phase
// to its end: the requests were cut (the admin got no answer, though the
// deletion committed) and the process exited 1, where the same stop a
// moment earlier was clean.
func TestShutdownWithADeleteWaitingForAnAttempt(t *testing.T) {
	const timeout = 3 * time.Second
	const admin = "admin-token-of-at-least-32-bytes-long!!"
	entered := make(chan struct{}, 16)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		entered <- struct{}{}
		<-r.Context().Done() // answers only when the attempt gives up
	}))
	defer receiver.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &logBuffer{}
	args := []string{"-addr", "127.0.0.1:0", "-db", t.TempDir() + "/db.sqlite", "-shutdown-timeout", timeout.String(),
		"-admin-token", admin, "-webhook-allow-private"}
	done := make(chan error, 1)
	go func() { done <- serve(ctx, func() {}, args, secretEnv, logs) }()
	addr := listening(t, logs)
	do := func(method, path, token, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		return res
	}
	res := do(http.MethodPost, "/webhooks", admin, `{"url":"`+receiver.URL+`"}`)
	var ep struct{ ID string }
	_ = json.NewDecoder(res.Body).Decode(&ep)
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("POST /webhooks: %s", res.Status)
	}
	tok, err := handlers.MintToken([]byte(testSecret), handlers.TokenRequest{UserID: "alice", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	res = do(http.MethodPost, "/calls", tok, `{"invitees":["bob"]}`)
	res.Body.Close()
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatalf("no webhook attempt reached the receiver\n%s", logs)
	}

	deleted := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodDelete, "http://"+addr+"/webhooks/"+ep.ID, nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
			if res.StatusCode != http.StatusNoContent {
				err = &httpStatusError{res.Status}
			}
		}
		deleted <- err
	}()
	// The deletion committed (the endpoint is gone) and its DELETE waits
	// for the attempt: the server is stopped then.
	wait.For(t, 10*time.Second, "the deletion to commit", func() bool {
		res := do(http.MethodGet, "/webhooks/"+ep.ID, admin, "")
		res.Body.Close()
		return res.StatusCode == http.StatusNotFound
	})
	select {
	case err := <-deleted:
		t.Fatalf("the DELETE answered (%v) while the attempt was in flight", err)
	default:
	}
	cancel()
	stopErr := served(t, done, 10*timeout, logs)
	if err := <-deleted; err != nil {
		t.Errorf("the DELETE in flight as the server stopped: %v", err)
	}
	if stopErr != nil {
		t.Errorf("serve: %v, want a clean stop (exit status 0)", stopErr)
	}
}

type httpStatusError struct{ status string }

func (e *httpStatusError) Error() string { return "answered " + e.status }
