package testkit

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"callsig/internal/pgtest"
)

// Under Main, a PostgreSQL backend's database is a copy of the migrated
// template: its schema is there before any app opens it. (A template left
// empty would pass every story, the apps migrating their copies, only
// slower.)
func TestDatabaseUnderMainIsAMigratedCopy(t *testing.T) {
	templates.enabled = true // this package's tests start no PostgreSQL backend but this one
	t.Cleanup(func() {
		templates.enabled = false
		if templates.name != "" {
			if err := pgtest.Drop(templates.name); err != nil {
				t.Error(err)
			}
		}
	})
	dsn := newDatabase(t)
	if templates.name == "" || templates.err != nil {
		t.Fatalf("no template made: %v", templates.err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var version int
	var calls bool
	err = conn.QueryRow(ctx, `SELECT (SELECT COALESCE(MAX(version), 0) FROM schema_migrations), to_regclass('calls') IS NOT NULL`).Scan(&version, &calls)
	if err != nil || version == 0 || !calls {
		t.Fatalf("the copy: migration version %d, table calls %v (%v); want the migrated schema", version, calls, err)
	}
}
