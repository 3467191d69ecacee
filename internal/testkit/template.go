package testkit

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"

	"callsig/db/postgres"
	"callsig/internal/pgtest"
)

// templates is the database the PostgreSQL backends copy in a package
// whose TestMain runs Main: migrated once per process instead of once per
// test (about 150 ms each, on a quiet machine, and e2e makes over a
// hundred). The migrations themselves are tested on empty databases by
// db/postgres and by every package without Main.
var templates struct {
	enabled bool
	once    sync.Once
	name    string
	err     error
}

// Main runs a package's tests from its TestMain with the migrated
// template enabled, then drops the template.
//
//	func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }
func Main(m *testing.M) int {
	templates.enabled = true
	code := m.Run()
	if templates.name != "" {
		if err := pgtest.Drop(templates.name); err != nil {
			fmt.Fprintln(os.Stderr, "testkit:", err)
		}
	}
	return code
}

// newDatabase returns a fresh PostgreSQL database for t: a copy of the
// migrated template under Main, an empty one otherwise (the app migrates
// it as it starts, as it would in production).
func newDatabase(t testing.TB) string {
	t.Helper()
	if !templates.enabled {
		return pgtest.NewDatabase(t)
	}
	templates.once.Do(func() {
		templates.name, templates.err = migratedTemplate()
	})
	if templates.err != nil {
		t.Fatalf("testkit: the migrated template database: %v", templates.err)
	}
	return pgtest.NewDatabaseFrom(t, templates.name)
}

func migratedTemplate() (string, error) {
	name, err := pgtest.Create("callsig_template_", "")
	if err != nil {
		return "", err
	}
	s, err := postgres.Open(context.Background(), pgtest.DSN(name), postgres.Options{MaxConns: 1})
	if err == nil {
		err = s.Close()
	}
	if err == nil {
		// A copy of a database a node served is a restore to the next
		// node (db/postgres, identity.go); the template was never
		// served, so its copies start as new databases do.
		err = postgres.ForgetIdentity(context.Background(), pgtest.DSN(name))
	}
	if err != nil {
		return name, fmt.Errorf("migrate %s: %w", name, err)
	}
	return name, nil
}
