package postgres

import (
	"context"
	"testing"
	"time"

	"callsig/db"
	"callsig/internal/pgtest"
	"callsig/internal/wait"
)

// A later batch of a deletion that PostgreSQL cannot serve now (a
// statement timeout behind a row another transaction holds; a deadlock's
// abort; a connection lost) ended the deletion's loop with no error: the
// 204 went out with the rest of the backlog pending, though the deletion
// promises all of it failed before the answer, and nothing fails it
// later but its expiry (the sweep of dead endpoints runs at claims, which
// no dead endpoint brings). Such a batch is now tried again.
func TestDeletionRetriesABatchThatCouldNotBeServed(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, pgtest.NewDatabase(t), Options{StatementTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	backlog := 2*db.FailBatch + 5
	queueBacklog(t, s, "https://e.example/", backlog)
	second := secondBatchDelivery(t, s) // a delivery of the deletion's second batch
	// Held past the statement timeout: the second batch times out.
	other := holdDelivery(t, s, second)
	done := make(chan error, 1)
	go func() { done <- s.DeleteWebhookEndpoint(ctx, "wh_e", 200) }()
	// Until the batch that waited has timed out and another waits, or the
	// deletion returns.
	var first time.Time
	returned := false
	wait.For(t, 10*time.Second, "a batch timed out and tried again", func() bool {
		select {
		case err := <-done:
			returned = true
			done <- err
			return true
		default:
		}
		var start time.Time
		if err := s.db.QueryRowContext(ctx, `SELECT query_start FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&start); err != nil {
			return false
		}
		if first.IsZero() {
			first = start
		}
		return start.After(first)
	})
	if err := other.Commit(); err != nil {
		t.Fatal(err)
	}
	awaitDone(t, done, "the deletion")
	pending := pendingBacklog(t, s)
	if pending != 0 {
		t.Errorf("after the deletion returned (before the row was let go: %v): %d of its deliveries pending, want 0", returned, pending)
	}
}
