package postgres

import (
	"os/exec"
	"path/filepath"
	"testing"

	"callsig/internal/pgtest"
)

// A dump restored into the database it was taken from (pg_restore
// --clean, the usual way back to last night's dump) keeps the server, the
// database's oid and the timeline, and its database_identity row is the
// dump's: the ids the database gave after the dump must still never be
// given again, and a client holding one must be reset.
func TestDumpRestoredIntoTheSameDatabase(t *testing.T) {
	for _, tool := range []string{"pg_dump", "pg_restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (%v): it comes with PostgreSQL; scripts/test installs postgresql-client when it is missing", tool, err)
		}
	}
	dsn := pgtest.NewDatabase(t)
	s := openStoreAt(t, dsn)
	kept := invite(t, s, "kept")
	s.Close()
	dump := filepath.Join(t.TempDir(), "callsig.dump")
	if out, err := exec.Command("pg_dump", "-Fc", "-f", dump, "-d", dsn).CombinedOutput(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}

	s = openStoreAt(t, dsn)
	lost := invite(t, s, "lost") // given after the dump
	s.Close()

	if out, err := exec.Command("pg_restore", "--clean", "--if-exists", "-d", dsn, dump).CombinedOutput(); err != nil {
		t.Fatalf("pg_restore: %v\n%s", err, out)
	}

	r := openStoreAt(t, dsn)
	defer r.Close()
	if !r.NeverGiven(lost) {
		t.Errorf("on the restored database, id %d (given after the dump) is not in a restore's gap", lost)
	}
	if r.NeverGiven(kept) {
		t.Errorf("on the restored database, id %d (the dump holds its event) is in a restore's gap", kept)
	}
	if next := invite(t, r, "next"); next <= lost {
		t.Errorf("the restored database gave id %d again (or below it): %d", lost, next)
	}
}
