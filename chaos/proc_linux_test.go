package chaos

import "syscall"

// childAttr makes a server the test starts never outlive the test.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
