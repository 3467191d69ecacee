package e2e

import (
	"context"
	"database/sql"
	"net/http"
	"testing"
	"time"

	_ "modernc.org/sqlite" // a second connection to the server's file

	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// wantUnavailable checks the answer to overload and shutdown: 503
// unavailable with Retry-After, as problem+json (testkit checks the spec).
func wantUnavailable(t *testing.T, r *testkit.Response) {
	t.Helper()
	r.WantProblem(http.StatusServiceUnavailable, "unavailable")
	if r.Header.Get("Retry-After") == "" {
		t.Fatalf("503 without Retry-After: %v", r.Header)
	}
}

// A store closed under a running server (shutdown) refuses with 503, reads
// and writes alike, never 500.
func TestClosedStoreAnswers503(t *testing.T) {
	s := testkit.Start(t)
	alice := s.Client("alice")
	callID := alice.Invite(nil, "bob").CallID
	if err := s.App.Store.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}
	wantUnavailable(t, alice.Post("/calls", map[string]any{"invitees": []string{"carol"}}))
	wantUnavailable(t, alice.Get("/calls"))
	wantUnavailable(t, alice.Get("/calls/"+callID))
	wantUnavailable(t, s.Client("bob").Action(callID, "accept", nil))
}

// Another process holding the database's write lock past busy_timeout
// (SQLITE_BUSY) is "retry later", not an internal error. In parallel with
// the other parallel tests: it spends its 13 s waiting out busy_timeout.
func TestBusyDatabaseAnswers503(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t)
	alice := s.Client("alice")
	alice.Invite(nil, "bob")

	other, err := sql.Open("sqlite", s.Config.DB+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatalf("open a second connection: %v", err)
	}
	defer other.Close()
	ctx := context.Background()
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatalf("take the write lock: %v", err)
	}
	defer conn.ExecContext(ctx, "ROLLBACK") //nolint:errcheck

	wantUnavailable(t, alice.Post("/calls", map[string]any{"invitees": []string{"carol"}}))
	// Reads go on: WAL readers do not wait for the writer.
	alice.Get("/calls").Want(http.StatusOK)

	// Readiness answers within its 2 s, though its probe of the writer
	// waits out busy_timeout (5 s) behind the lock.
	anon := s.Client("anon")
	anon.Token = ""
	start := time.Now()
	wantUnavailable(t, anon.Get("/readyz"))
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("/readyz answered after %v, want its 2 s limit", took)
	}
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "ready once the lock is gone", func() bool {
		return anon.Get("/readyz").Status == http.StatusOK
	})
}
