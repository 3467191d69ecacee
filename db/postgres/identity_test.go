package postgres

import (
	"context"
	"database/sql"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"callsig/calls"
	"callsig/db"
	"callsig/db/storetest"
	"callsig/internal/pgtest"
	"callsig/internal/wait"
)

func openStoreAt(t *testing.T, dsn string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn, Options{MaxConns: 2})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// invite saves a new call from alice to bob and returns bob's event id.
func invite(t *testing.T, s *Store, id string) int64 {
	t.Helper()
	ch := storetest.NewCall(id, "alice", time.Now().UnixMilli(), "bob")
	storetest.Save(t, s, ch)
	return ch.Events[0].ID
}

func dbName(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

// restoreMarks counts the database's restore marks.
func restoreMarks(t *testing.T, dsn string) int {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE user_id = '' AND type = $1`, db.RestoreMarkType).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A copy of a database the nodes served (here CREATE DATABASE …
// TEMPLATE, as a dump restored into a new database gets a new oid too) is
// a restore: the first store on it moves the ids on past a mark, so the
// ids the original gave after the copy are never given again and a
// client holding one is reset. Restarting on either database marks
// nothing more.
func TestCopyOfAServedDatabaseMovesIDsOn(t *testing.T) {
	orig := pgtest.NewDatabase(t)
	s := openStoreAt(t, orig)
	kept := invite(t, s, "kept")
	s.Close()
	copied := pgtest.NewDatabaseFrom(t, dbName(t, orig))

	s = openStoreAt(t, orig)
	lost := invite(t, s, "lost") // given by the original after the copy
	s.Close()

	c := openStoreAt(t, copied)
	if !c.NeverGiven(lost) {
		t.Errorf("on the copy, id %d (given by the original after the copy) is not in a restore's gap", lost)
	}
	if c.NeverGiven(kept) {
		t.Errorf("on the copy, id %d (the copy holds its event) is in a restore's gap", kept)
	}
	next := invite(t, c, "next")
	if next <= lost || c.NeverGiven(next) {
		t.Errorf("the copy's first new id is %d (in a gap: %v), want one past the gap, above %d", next, c.NeverGiven(next), lost)
	}
	c.Close()
	if n := restoreMarks(t, copied); n != 1 {
		t.Errorf("the copy holds %d restore marks, want 1", n)
	}

	c = openStoreAt(t, copied) // a restart: the same database
	if !c.NeverGiven(lost) {
		t.Errorf("after a restart on the copy, id %d is not in the gap", lost)
	}
	if again := invite(t, c, "again"); again <= next || again > next+1000 {
		t.Errorf("after a restart on the copy, id %d follows %d: want the sequence to go on", again, next)
	}
	c.Close()
	if n := restoreMarks(t, copied); n != 1 {
		t.Errorf("after a restart the copy holds %d restore marks, want 1", n)
	}

	s = openStoreAt(t, orig)
	defer s.Close()
	if s.NeverGiven(lost) {
		t.Errorf("the original counts its own id %d in a gap", lost)
	}
	if n := restoreMarks(t, orig); n != 0 {
		t.Errorf("the original holds %d restore marks, want none", n)
	}
}

// A database replaced under a running store (dropped, and created again
// from an earlier copy: a restore): the store's new sessions find another
// identity before they serve, and the store's next write comes past a
// mark of the copy, which its log knows.
func TestDatabaseRestoredUnderARunningStore(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	name := dbName(t, dsn)
	s := openStoreAt(t, dsn)
	invite(t, s, "kept")
	s.Close()
	backup := pgtest.NewDatabaseFrom(t, name)

	s = openStoreAt(t, dsn)
	defer s.Close()
	lost := invite(t, s, "lost")

	admin, err := pgx.Connect(context.Background(), pgtest.AdminDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	for _, q := range []string{
		"DROP DATABASE " + name + " WITH (FORCE)",
		"CREATE DATABASE " + name + " TEMPLATE " + dbName(t, backup),
	} {
		if _, err := admin.Exec(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	// The pool's sessions died with the database: a write may fail once.
	var next int64
	if !wait.Until(10*time.Second, func() bool {
		ch := storetest.NewCall("next", "alice", time.Now().UnixMilli(), "bob")
		err = s.Update(context.Background(), func(tx calls.Tx) error { return tx.Save(context.Background(), ch) })
		next = ch.Events[0].ID
		return err == nil
	}) {
		t.Fatalf("write after the restore: %v", err)
	}
	if next <= lost {
		t.Errorf("after the restore under it, the store gave id %d, not above %d which it gave before", next, lost)
	}
	if !s.NeverGiven(lost) {
		t.Errorf("after the restore under it, id %d is not in a gap the store knows", lost)
	}
}

func TestIdentityMatches(t *testing.T) {
	n := func(v int64) sql.NullInt64 { return sql.NullInt64{Int64: v, Valid: true} }
	unknown := sql.NullInt64{}
	base := identity{n(7), n(16384), n(1), n(16390)}
	for _, tc := range []struct {
		name string
		b    identity
		want bool
	}{
		{"same", base, true},
		{"another server (initdb, pg_upgrade)", identity{n(8), n(16384), n(1), n(16390)}, false},
		{"another database (pg_restore into a new one)", identity{n(7), n(16385), n(1), n(16390)}, false},
		{"another timeline (point-in-time recovery, a promoted replica)", identity{n(7), n(16384), n(2), n(16390)}, false},
		{"another events table (pg_restore --clean into the same database)", identity{n(7), n(16384), n(1), n(16500)}, false},
		{"system unknown", identity{unknown, n(16384), n(1), n(16390)}, true},
		{"events table unknown (a row from before 0014)", identity{n(7), n(16384), n(1), unknown}, true},
		{"timeline unknown, oid differs", identity{n(7), n(16385), unknown, n(16390)}, false},
		{"nothing known", identity{}, true},
	} {
		if got := base.matches(tc.b); got != tc.want {
			t.Errorf("%s: matches = %v, want %v", tc.name, got, tc.want)
		}
		if got := tc.b.matches(base); got != tc.want {
			t.Errorf("%s, the other way: matches = %v, want %v", tc.name, got, tc.want)
		}
	}
}
