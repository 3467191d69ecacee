package sqlite

import (
	"context"
	"path/filepath"
	"testing"
)

// openTest opens a store on a fresh file and closes it when the test ends.
func openTest(t testing.TB) *Store {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), "callsig.db"))
}

func openAt(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// count returns SELECT COUNT(*) FROM <from...>.
func count(t testing.TB, s *Store, from string, args ...any) int {
	t.Helper()
	var n int
	if err := s.rdb.Get(&n, "SELECT COUNT(*) FROM "+from, args...); err != nil {
		t.Fatalf("count %s: %v", from, err)
	}
	return n
}
