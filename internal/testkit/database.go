package testkit

import "time"

// WithDB runs the server on an existing database (a SQLite path or a
// postgres:// URL) instead of a fresh file, e.g. one a test filled by
// migrating another server's file into it.
func WithDB(dsn string) Option { return func(s *settings) { s.cfg.DB = dsn } }

// WithFakeClockAt runs the server on a manual clock starting at at, e.g.
// where the clock of a server that used the same data before stopped.
func WithFakeClockAt(at time.Time) Option {
	return func(s *settings) { s.fakeClock, s.clockAt = true, at }
}
