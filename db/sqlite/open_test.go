package sqlite

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// The database holds webhook signing secrets and stored responses: it and
// its -wal and -shm files are readable by their owner only, whatever the
// umask, like the development secret.
func TestDatabaseFilesArePrivate(t *testing.T) {
	old := syscall.Umask(0o022) // the usual umask, which leaves 0644 files
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "private.db")
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	// A write makes sure the WAL exists.
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("stat: %v", err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s: mode %o, want 600", filepath.Base(p), perm)
		}
	}
}

// A second store on a file another holds is refused (ErrInUse): two
// servers on one file each kept a writer and a cache of calls of their
// own, and a reject answered by one was overwritten by an accept the other
// served from its cache (a review). Closed, the file opens again.
func TestSecondStoreOnOneFileIsRefused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "callsig.db")
	first, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := Open(ctx, path, Options{}); !errors.Is(err, ErrInUse) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("a second Open of a held file: %v, want ErrInUse", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("Open once the first closed: %v", err)
	}
	again.Close()
}
