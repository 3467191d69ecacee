package sqlite

import (
	"errors"
	"fmt"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"callsig/calls"
	"callsig/db"
)

// unavailable marks the failures that say "not now" rather than "broken"
// as calls.ErrUnavailable, so the HTTP layer answers 503 with Retry-After
// instead of 500: the lock held by another process past busy_timeout
// (SQLITE_BUSY, SQLITE_LOCKED), and the storage failing under SQLite (an
// I/O error, a full disk, a file it cannot open): the transaction rolled
// back, nothing was applied, and the request may succeed once the
// operator has freed space or fixed the disk. A closed store is
// db.ErrClosed, which wraps calls.ErrUnavailable already.
func unavailable(err error) error {
	if err == nil || errors.Is(err, calls.ErrUnavailable) {
		return err
	}
	var se *msqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff { // the primary code; extended codes add high bits
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN:
			return fmt.Errorf("%w: %w", calls.ErrUnavailable, err)
		}
	}
	return err
}

// isClosed reports whether Close has begun.
func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// readFailed classifies a read's error: one that raced Close (the pool
// closed under it) is db.ErrClosed, not an internal error.
func (s *Store) readFailed(err error) error {
	if err != nil && !errors.Is(err, db.ErrClosed) && s.isClosed() {
		return fmt.Errorf("%w: %w", db.ErrClosed, err)
	}
	return unavailable(err)
}
