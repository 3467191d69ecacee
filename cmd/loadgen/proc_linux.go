package main

import "syscall"

// childAttr makes a spawned server never outlive the load generator,
// whatever happens to it.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
