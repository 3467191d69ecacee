//go:build unix

package main

import (
	"syscall"
	"time"
)

// raiseOpenFileLimit lifts the soft RLIMIT_NOFILE to the hard limit, for
// the streams of this process and, inherited, of a spawned server.
func raiseOpenFileLimit() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, err
		}
	}
	return uint64(l.Cur), nil
}

// selfCPU is the CPU time the load generator itself has used: it shares
// the machine with the server, which matters on 2 cores.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
