package postgres

import (
	"context"
	"testing"
	"time"

	"callsig/internal/pgtest"
)

func TestSetSQL(t *testing.T) {
	for _, c := range []struct {
		in   []setting
		want string
	}{
		{[]setting{{"synchronous_commit", "on"}}, "SET synchronous_commit = 'on'"},
		{[]setting{{"synchronous_commit", "on"}, {"statement_timeout", "5000"}, {"lock_timeout", "0"}},
			"SET synchronous_commit = 'on'; SET statement_timeout = '5000'; SET lock_timeout = '0'"},
		{[]setting{{"application_name", "it's"}}, "SET application_name = 'it''s'"},
	} {
		if got := setSQL(c.in); got != c.want {
			t.Errorf("setSQL(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

// The store's settings hold on its sessions whatever the database's
// defaults: they are set as each session connects, no longer sent as
// startup parameters (which a pooler refuses or drops), and the DSN's
// own startup parameters still are.
func TestSessionSettingsOverrideDefaults(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	name := dsn[len("postgres://postgres@127.0.0.1:5432/") : len(dsn)-len("?sslmode=disable")]
	pool, err := openPool(ctx, dsn, 1, time.Second, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.ExecContext(ctx, "ALTER DATABASE "+name+" SET synchronous_commit = off"); err != nil {
		t.Fatal(err)
	}
	pool.Close()
	pool, err = openPool(ctx, dsn+"&application_name=callsig_settings_test", 1, 1500*time.Millisecond, false, "")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var sync, timeout, app string
	if err := pool.QueryRowContext(ctx, `SELECT current_setting('synchronous_commit'), current_setting('statement_timeout'), current_setting('application_name')`).Scan(&sync, &timeout, &app); err != nil {
		t.Fatal(err)
	}
	if sync != "on" || timeout != "1500ms" || app != "callsig_settings_test" {
		t.Fatalf("synchronous_commit %s, statement_timeout %s, application_name %s; want on, 1500ms, callsig_settings_test", sync, timeout, app)
	}
}
