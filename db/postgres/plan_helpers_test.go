package postgres

import (
	"context"
	"strings"
	"testing"

	"callsig/internal/pgtest"
)

// storeWith opens a store on a fresh database and runs stmts on it (rows
// for a plan test, then ANALYZE), closing it when t ends.
func storeWith(t *testing.T, o Options, stmts ...string) *Store {
	t.Helper()
	ctx := context.Background()
	s, err := Open(ctx, pgtest.NewDatabase(t), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, q := range stmts {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return s
}

// genericPlans returns the plan PostgreSQL gives each of explains (EXPLAIN
// EXECUTE statements) once it turns to the generic plan of a prepared
// statement, after prepares (PREPARE statements) in one transaction.
func genericPlans(t *testing.T, s *Store, prepares []string, explains ...string) []string {
	t.Helper()
	ctx := context.Background()
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // read only
	for _, q := range append([]string{`SET LOCAL plan_cache_mode = force_generic_plan`}, prepares...) {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	plans := make([]string, len(explains))
	for i, q := range explains {
		var lines []string
		if err := tx.SelectContext(ctx, &lines, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		plans[i] = strings.Join(lines, "\n")
	}
	return plans
}
