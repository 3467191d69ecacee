package sqlitetopg

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"callsig/db/postgres"
	"callsig/db/sqlite"
	"callsig/internal/pgtest"
)

// sourceFile returns a SQLite file at the current schema holding one call,
// its caller's row and one event (id 7, after pruned ones).
func sourceFile(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "callsig.db")
	s, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, q := range []string{
		`INSERT INTO calls (seq, id, caller, mode, state, timeout, create_time, caller_tracked) VALUES (3, 'c1', 'alice', 'general', 'started', 30, 1000, 1)`,
		`INSERT INTO call_users (call_seq, user_id, ord, state, busy) VALUES (3, 'alice', 0, 'accepted', 1)`,
		`INSERT INTO events (id, user_id, call_id, type, data, time) VALUES (7, 'alice', 'c1', 'callCreated', '{}', 1000)`,
		`UPDATE sqlite_sequence SET seq = 9 WHERE name = 'events'`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return path
}

func count(t *testing.T, conn *pgx.Conn, q string) int64 {
	t.Helper()
	var n int64
	if err := conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// Ids are kept, and the sequences moved past SQLite's high-water marks
// (sqlite_sequence), not only past the rows kept.
func TestCopyKeepsIdsAndMovesSequences(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	rep, err := Copy(ctx, sourceFile(t), dsn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.LastEventID != 9 {
		t.Fatalf("last event id %d, want sqlite_sequence's 9", rep.LastEventID)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if n := count(t, conn, `SELECT nextval('event_ids')`); n != 10 {
		t.Fatalf("next event id %d, want 10", n)
	}
	if n := count(t, conn, `SELECT last_id FROM event_users WHERE user_id = 'alice'`); n != 7 {
		t.Fatalf("alice's last id %d, want 7", n)
	}
	if n := count(t, conn, `SELECT nextval(pg_get_serial_sequence('calls', 'seq'))`); n != 4 {
		t.Fatalf("next call seq %d, want 4", n)
	}
	if n := count(t, conn, `SELECT count(*) FROM call_users WHERE busy AND call_seq = 3`); n != 1 {
		t.Fatalf("busy flag not copied")
	}
}

// A target holding anything is refused, and left as it was.
func TestCopyRefusesNonEmptyTarget(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	s, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO webhook_endpoints (id, url, secret, created_at) VALUES ('w1', 'http://x', 'whsec_x', 1)`); err != nil {
		t.Fatal(err)
	}
	_, err = Copy(ctx, sourceFile(t), dsn, Options{})
	if !errors.Is(err, ErrTargetNotEmpty) || !strings.Contains(err.Error(), "webhook_endpoints") {
		t.Fatalf("copy into a database with an endpoint: %v, want ErrTargetNotEmpty naming webhook_endpoints", err)
	}
	if n := count(t, conn, `SELECT (SELECT count(*) FROM calls) + (SELECT count(*) FROM events) + (SELECT count(*) FROM event_users)`); n != 0 {
		t.Fatalf("the refused copy wrote %d rows", n)
	}
	if n := count(t, conn, `SELECT count(*) FROM event_ids WHERE is_called`); n != 0 {
		t.Fatal("the refused copy moved the event id sequence")
	}
	if n := count(t, conn, `SELECT count(*) FROM webhook_endpoints`); n != 1 {
		t.Fatalf("%d endpoints after the refused copy, want the 1 there was", n)
	}
}

// A file at another schema version is refused before anything is written.
func TestCopyRefusesOtherSchema(t *testing.T) {
	path := sourceFile(t)
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations)`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	_, err = Copy(context.Background(), path, "postgres://postgres@127.0.0.1:1/none", Options{})
	if err == nil || !strings.Contains(err.Error(), "start and stop a node of this version") {
		t.Fatalf("copy of an old file: %v", err)
	}
}
