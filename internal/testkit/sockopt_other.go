//go:build !unix

package testkit

import (
	"errors"
	"syscall"
)

// tinyReceiveBuffer: the tests that need a stuck stream run on Unix only.
func tinyReceiveBuffer(_, _ string, _ syscall.RawConn) error {
	return errors.New("testkit: a stuck stream needs Unix socket options")
}
