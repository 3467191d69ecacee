package sqlitetopg

import (
	"context"
	"database/sql"
	"os"
	"testing"
)

// A write that leaves both files' sizes as they were, on a filesystem that
// keeps modification times too coarsely to tell (restored here by hand),
// still changes the stamp: a WAL all checkpointed is written again from
// its start, and rollback-journal mode rewrites the file in place.
func TestStampSeesAWriteThatKeepsSizesAndTimes(t *testing.T) {
	cases := []struct {
		name    string
		journal string
		before  []string // run before the first stamp
	}{
		// PASSIVE: every frame copied back, the WAL kept at its length.
		{"WAL written again from its start", "WAL", []string{`PRAGMA wal_checkpoint(PASSIVE)`}},
		{"rollback journal", "DELETE", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			path := sourceFile(t)
			raw, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			// One connection, kept open: the WAL stays on disk.
			conn, err := raw.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			exec := func(q string) {
				t.Helper()
				if _, err := conn.ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			exec(`PRAGMA journal_mode = ` + tc.journal)
			exec(`PRAGMA wal_autocheckpoint = 0`)
			for i := range 20 {
				exec(`UPDATE calls SET extended_data = 'padding ` + string(rune('a'+i)) + `' WHERE id = 'c1'`)
			}
			for _, q := range tc.before {
				exec(q)
			}
			before, err := stampOf(path)
			if err != nil {
				t.Fatal(err)
			}
			exec(`UPDATE calls SET extended_data = 'written during the copy' WHERE id = 'c1'`)
			if err := os.Chtimes(path, before.mod, before.mod); err != nil {
				t.Fatal(err)
			}
			if before.walSize > 0 {
				if err := os.Chtimes(path+"-wal", before.walMod, before.walMod); err != nil {
					t.Fatal(err)
				}
			}
			after, err := stampOf(path)
			if err != nil {
				t.Fatal(err)
			}
			// What the stamp held before: no difference to see.
			if after.size != before.size || after.walSize != before.walSize || !after.mod.Equal(before.mod) || !after.walMod.Equal(before.walMod) {
				t.Fatalf("sizes or times changed (%+v, then %+v): the case does not test what it is for", before, after)
			}
			if after.equal(before) {
				t.Fatal("the stamp is unchanged by a write")
			}
		})
	}
}
