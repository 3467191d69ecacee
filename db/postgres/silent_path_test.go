package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"callsig/calls"
	"callsig/db/postgres"
	"callsig/internal/pgtest"
	"callsig/internal/testkit"
	"callsig/internal/wait"
	"callsig/webhooks"
)

// A network path to PostgreSQL that goes silent (packets dropped, no
// reset) fails writes and pings as unavailable within their bounds, and
// the store works again once the path does. Writes and /readyz's ping
// used to wait for COMMIT's or BEGIN's answer for as long as the kernel
// kept the connection (about 15 minutes): statement_timeout is the
// server's, and the transaction was detached from every deadline.
func TestSilentPathFailsWithinBounds(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	proxy := testkit.StartTCPProxy(t, "127.0.0.1:5432")
	const statementTimeout = 500 * time.Millisecond // a write's bound: 2 s
	s, err := postgres.Open(context.Background(), strings.Replace(dsn, "127.0.0.1:5432", proxy.Addr, 1),
		postgres.Options{MaxConns: 2, StatementTimeout: statementTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	save := func(ctx context.Context, id string) error {
		return s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, started(id, "alice", "bob")) })
	}
	if err := save(context.Background(), "before"); err != nil {
		t.Fatal(err)
	}

	// A write whose first statement is a read (a use-case loading its
	// call) sends it with the use-case's context, before COMMIT.
	load := func(ctx context.Context, _ string) error {
		return s.Update(ctx, func(tx calls.Tx) error { _, err := tx.Call(ctx, "before"); return err })
	}
	warm := 0
	for name, write := range map[string]func(context.Context, string) error{"save": save, "load": load} {
		// A background loop's write has no deadline of its own; a
		// request's has one past the store's bound.
		for deadline, ctx := range map[string]context.Context{"no deadline": context.Background(), "a request's": withTimeout(t, 30*time.Second)} {
			// On a connection just used (a pool checks one idle for
			// long before handing it out, with the transaction's bound).
			proxy.Thaw()
			var last error
			warm++
			if !wait.Until(20*time.Second, func() bool { last = save(context.Background(), fmt.Sprint("warm", warm)); return last == nil }) {
				t.Fatalf("no write before freezing: %v", last)
			}
			proxy.Freeze()
			start := time.Now()
			err := write(ctx, fmt.Sprint("during", warm))
			if took := time.Since(start); took > 5*time.Second || !errors.Is(err, calls.ErrUnavailable) {
				t.Errorf("%s with %s deadline on a silent path: %v after %v; want unavailable within about 2 s", name, deadline, err, took)
			}
		}
	}
	start := time.Now()
	if err := s.Ping(withTimeout(t, time.Second)); err == nil || time.Since(start) > 3*time.Second {
		t.Errorf("ping with a 1 s deadline on a silent path: %v after %v; want an error within about 1 s", err, time.Since(start))
	}

	proxy.Thaw()
	var last error
	if !wait.Until(20*time.Second, func() bool { last = save(context.Background(), "after"); return last == nil }) {
		t.Fatalf("the store did not write again once the path did: %v", last)
	}
	if err := s.Ping(withTimeout(t, time.Second)); err != nil {
		t.Fatalf("ping after the path came back: %v", err)
	}
}

func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// A write transaction whose deadline passes between its statements is
// rolled back by database/sql, and what it sends next fails with
// sql.ErrTxDone: that is the write out of time (503), not a bug (500).
func TestWriteOutOfTimeIsUnavailable(t *testing.T) {
	s, err := postgres.Open(context.Background(), pgtest.NewDatabase(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := withTimeout(t, 300*time.Millisecond)
	err = s.UpdateWebhooks(ctx, func(tx webhooks.Tx) error {
		if _, err := tx.IdempotencyRecord(ctx, "admin", "k", 1); err != nil {
			return err
		}
		<-ctx.Done() // the request's time runs out mid-transaction
		time.Sleep(50 * time.Millisecond)
		return nil
	})
	if !errors.Is(err, calls.ErrUnavailable) {
		t.Fatalf("a write out of time = %v, want unavailable", err)
	}
}

// A server frozen on a live host (the proxy acknowledges every byte and
// answers none, so neither keepalive nor TCP_USER_TIMEOUT fires) fails
// every statement within the answer bound, whatever its context: the
// reads and writes of background loops (the scheduler's next deadline,
// the webhook dispatcher's claim and next due time, the pruning of the
// log) ran with a context of no deadline and waited until the server
// answered, which a store failed over to another address never does.
func TestFrozenServerFailsBackgroundStatements(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	proxy := testkit.StartTCPProxy(t, "127.0.0.1:5432")
	s, err := postgres.Open(context.Background(), strings.Replace(dsn, "127.0.0.1:5432", proxy.Addr, 1),
		postgres.Options{MaxConns: 8, StatementTimeout: 500 * time.Millisecond}) // bound: 2 s
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	bg := context.Background()
	ops := map[string]func() error{
		"next deadline":    func() error { _, err := s.NextDeadline(bg); return err },
		"next webhook due": func() error { _, err := s.NextWebhookDue(bg, 1); return err },
		"claim webhook deliveries": func() error {
			_, err := s.ClaimWebhookDeliveries(bg, webhooks.Claim{Now: 1, LeaseUntil: 2, Limit: 4, Share: 4})
			return err
		},
		"prune events": func() error { _, err := s.PruneEvents(bg, 1); return err },
		"newest ids":   func() error { _, err := s.NewestEventIDs(bg, []string{"bob"}); return err },
		"events after": func() error { _, err := s.EventsAfter(bg, "bob", 0, 10); return err },
	}
	for name, op := range ops {
		if err := op(); err != nil {
			t.Fatalf("%s before freezing: %v", name, err)
		}
	}
	proxy.Freeze()
	defer proxy.Thaw()
	type outcome struct {
		name string
		err  error
		took time.Duration
	}
	done := make(chan outcome, len(ops))
	start := time.Now()
	for name, op := range ops {
		go func() { err := op(); done <- outcome{name, err, time.Since(start)} }()
	}
	for range ops {
		select {
		case o := <-done:
			if !errors.Is(o.err, calls.ErrUnavailable) || o.took > 5*time.Second {
				t.Errorf("%s with no deadline on a frozen server: %v after %v; want unavailable within about 2 s", o.name, o.err, o.took)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("statements with no deadline on a frozen server: still waiting after 15 s")
		}
	}
}
