//go:build unix

package sqlite

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// A lock another descriptor of the file holds for a moment (a child
// process between its fork and its exec holds a copy of the closed
// store's) is waited for: the store opens once it is let go.
func TestLockHeldForAMomentIsWaitedFor(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "callsig.db")
	first, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	held, err := Lock(path)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(100*time.Millisecond, func() { held.Close() })
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("Open while the lock is held for 100 ms: %v", err)
	}
	s.Close()
}
