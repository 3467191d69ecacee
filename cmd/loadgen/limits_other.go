//go:build !unix

package main

import (
	"errors"
	"time"
)

// raiseOpenFileLimit: there is no RLIMIT_NOFILE to raise here.
func raiseOpenFileLimit() (uint64, error) {
	return 0, errors.New("no open-file limit on this system")
}

// selfCPU is not measured here (0: not reported).
func selfCPU() time.Duration { return 0 }
