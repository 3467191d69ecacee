//go:build !linux

package testkit

import "syscall"

// reusePort: ports are held on Linux only (see port_linux.go).
func reusePort(_, _ string, _ syscall.RawConn) error { return nil }

// holdPort holds nothing here: a restarted node's port may be taken in
// the gap, and its listen then fails.
func holdPort(string) (func(), error) { return func() {}, nil }
