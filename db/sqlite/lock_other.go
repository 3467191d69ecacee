//go:build !unix

package sqlite

import "io"

// Lock takes the database file for this process where the system has
// flock (see lock_unix.go); elsewhere it takes nothing.
func Lock(path string) (io.Closer, error) { return io.NopCloser(nil), nil }
