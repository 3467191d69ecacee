package sqlitetopg

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"callsig/db/postgres"
	"callsig/db/sqlite"
	"callsig/internal/pgtest"
	"callsig/internal/testkit"
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
	conn := openTarget(t, dsn)
	if _, err := conn.Exec(ctx, `INSERT INTO webhook_endpoints (id, url, secret, created_at) VALUES ('w1', 'http://x', 'whsec_x', 1)`); err != nil {
		t.Fatal(err)
	}
	_, err := Copy(ctx, sourceFile(t), dsn, Options{})
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

// execSQLite runs stmts on the SQLite file at path (a stopped node's),
// each with the arguments given with it.
func execSQLite(t *testing.T, path string, stmts ...stmt) {
	t.Helper()
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, s := range stmts {
		if _, err := raw.Exec(s.q, s.args...); err != nil {
			t.Fatalf("%s: %v", s.q, err)
		}
	}
}

type stmt struct {
	q    string
	args []any
}

// openTarget migrates the empty database dsn (as a node's start would) and
// connects to it.
func openTarget(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	s, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Text PostgreSQL cannot hold, which SQLite kept (a NUL servers before the
// API refused it stored, decoded from "\u0000" in extendedData or a webhook
// description, a receiver's NUL in last_error), is copied with U+FFFD in
// its place instead of failing the whole copy, and the report counts the
// values changed per column. A JSON text's \u0000 escape is six ASCII
// bytes, kept as it is. (An Idempotency-Key that is not UTF-8 is left out:
// TestCopyLeavesOutKeysPostgreSQLCannotHold.)
func TestCopyReplacesTextPostgreSQLCannotHold(t *testing.T) {
	ctx := context.Background()
	path := sourceFile(t)
	execSQLite(t, path,
		stmt{`UPDATE calls SET extended_data = ? WHERE seq = 3`, []any{"a\x00b"}},
		stmt{`UPDATE call_users SET extended_data = ? WHERE call_seq = 3`, []any{"\x00"}},
		stmt{`UPDATE events SET data = ? WHERE id = 7`, []any{`{"extendedData":"a\u0000b"}`}},
		stmt{`INSERT INTO webhook_endpoints (id, url, secret, description, created_at) VALUES ('w1', 'http://x', 'whsec_x', ?, 1)`, []any{"ops\x00"}},
		stmt{`INSERT INTO webhook_messages (id, msg_id, type, call_id, payload, created_at) VALUES (1, 'msg_1', 'call.created', 'c1', x'7b00', 1)`, nil},
		stmt{`INSERT INTO webhook_deliveries (id, message_id, endpoint_id, status, attempts, last_error, next_attempt_at, created_at) VALUES (1, 1, 'w1', 'failed', 3, ?, 0, 1)`, []any{"HTTP 500: \x00\x00"}},
	)
	dsn := pgtest.NewDatabase(t)
	rep, err := Copy(ctx, path, dsn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []ColumnCount{{"calls", "extended_data", 1}, {"call_users", "extended_data", 1},
		{"webhook_endpoints", "description", 1}, {"webhook_deliveries", "last_error", 1}}
	if fmt.Sprint(rep.Replaced) != fmt.Sprint(want) {
		t.Errorf("report of values replaced %v, want %v", rep.Replaced, want)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for q, want := range map[string]string{
		`SELECT extended_data FROM calls WHERE seq = 3`:           "a\uFFFDb",
		`SELECT extended_data FROM call_users WHERE call_seq = 3`: "\uFFFD",
		`SELECT data FROM events WHERE id = 7`:                    `{"extendedData":"a\u0000b"}`,
		`SELECT description FROM webhook_endpoints`:               "ops\uFFFD",
		`SELECT last_error FROM webhook_deliveries`:               "HTTP 500: \uFFFD\uFFFD",
		`SELECT encode(payload, 'hex') FROM webhook_messages`:     "7b00", // BYTEA: as it was
	} {
		var got string
		if err := conn.QueryRow(ctx, q).Scan(&got); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if got != want {
			t.Errorf("%s: %q, want %q", q, got, want)
		}
	}
}

// A node that crashed leaves its last commits in the -wal file (no
// checkpoint at close): the copy, which opens the file read-only, still
// reads them.
func TestCopyReadsACrashedNodesWAL(t *testing.T) {
	s1 := testkit.Start(t, testkit.WithFakeClock())
	alice := s1.Client("alice")
	for range 5 {
		alice.Invite(nil, "bob")
	}
	// The file and its WAL as a crash would leave them, taken while the
	// node runs.
	crashed := filepath.Join(t.TempDir(), "callsig.db")
	copyFile(t, s1.Config.DB, crashed)
	copyFile(t, s1.Config.DB+"-wal", crashed+"-wal")
	if st, err := os.Stat(crashed + "-wal"); err != nil || st.Size() == 0 {
		t.Fatalf("premise: no WAL to read (%v)", err)
	}
	s1.Stop()
	rep, err := Copy(context.Background(), crashed, pgtest.NewDatabase(t), Options{Now: s1.Clock.Now})
	if err != nil {
		t.Fatalf("copy of a crashed node's file: %v", err)
	}
	if rep.Tables[0].Table != "calls" || rep.Tables[0].Rows != 5 {
		t.Fatalf("copied %+v, want 5 calls", rep.Tables)
	}
}

// copyFile copies the file at from to to; a missing from copies nothing.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if os.IsNotExist(err) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Idempotency-Keys that are not UTF-8, which servers before 13be079
// stored, are left out and counted, not fitted: two that differ only in
// such a byte would be fitted alike and collide on the primary key,
// failing the whole copy, and no server since accepts such a key, so no
// client can replay its row.
func TestCopyLeavesOutKeysPostgreSQLCannotHold(t *testing.T) {
	ctx := context.Background()
	path := sourceFile(t)
	execSQLite(t, path,
		stmt{`INSERT INTO idempotency_keys (scope, key, fingerprint, created_at, expires_at) VALUES ('alice', ?, 'f1', 1, ?)`, []any{"caf\xe9", int64(1) << 50}},
		stmt{`INSERT INTO idempotency_keys (scope, key, fingerprint, created_at, expires_at) VALUES ('alice', ?, 'f2', 1, ?)`, []any{"caf\xe8", int64(1) << 50}},
		stmt{`INSERT INTO idempotency_keys (scope, key, fingerprint, created_at, expires_at) VALUES ('alice', ?, 'f3', 1, ?)`, []any{"café", int64(1) << 50}},
	)
	dsn := pgtest.NewDatabase(t)
	rep, err := Copy(ctx, path, dsn, Options{})
	if err != nil {
		t.Fatalf("copy of a file holding two old keys that differ only in a non-UTF-8 byte: %v", err)
	}
	if want := []TableCount{{Table: "idempotency_keys", Rows: 2}}; !slices.Equal(rep.Dropped, want) {
		t.Errorf("dropped %v, want %v", rep.Dropped, want)
	}
	for _, tc := range rep.Tables {
		if tc.Table == "idempotency_keys" && tc.Rows != 1 {
			t.Errorf("idempotency_keys copied: %d rows, want the valid key's only", tc.Rows)
		}
	}
}

// A stored answer with an empty body (SQLite: a zero-length BLOB, not
// NULL) keeps an empty body, not NULL (the driver reads it as nil), and a
// NULL stays NULL.
func TestCopyKeepsEmptyBodies(t *testing.T) {
	ctx := context.Background()
	path := sourceFile(t)
	execSQLite(t, path,
		stmt{`INSERT INTO idempotency_keys (scope, key, fingerprint, status, body, created_at, expires_at) VALUES ('alice', 'k', 'f', 204, x'', 1, ?)`, []any{int64(1) << 50}},
		stmt{`INSERT INTO idempotency_keys (scope, key, fingerprint, status, body, created_at, expires_at) VALUES ('alice', 'n', 'f', 204, NULL, 1, ?)`, []any{int64(1) << 50}},
	)
	dsn := pgtest.NewDatabase(t)
	if _, err := Copy(ctx, path, dsn, Options{}); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if n := count(t, conn, `SELECT count(*) FROM idempotency_keys WHERE body IS NULL`); n != 1 {
		t.Errorf("%d NULL bodies, want 1: a zero-length body became NULL", n)
	}
	if n := count(t, conn, `SELECT count(*) FROM idempotency_keys WHERE body = '\x'::bytea`); n != 1 {
		t.Errorf("%d empty bodies, want 1", n)
	}
}
