package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"callsig/db"
	"callsig/db/sqlite"
	"callsig/db/storetest"
)

// TestContract runs the store contract suite on SQLite: a fresh file per
// test, the durable default options.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) db.Store {
		s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "callsig.db"), sqlite.Options{})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestContractWithoutCallCache runs the suite again with the writer's call
// cache off: every Call and Calls then reads the rows, a path the cache
// otherwise hides from the suite.
func TestContractWithoutCallCache(t *testing.T) {
	storetest.Run(t, func(t *testing.T) db.Store {
		s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "callsig.db"), sqlite.Options{NoCallCache: true})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
