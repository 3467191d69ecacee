//go:build !linux

package chaos

import "syscall"

// childAttr: only Linux kills a child when its parent dies; elsewhere a
// test killed mid-run leaves its server running.
func childAttr() *syscall.SysProcAttr { return nil }
