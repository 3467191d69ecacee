//go:build !linux

package main

import "syscall"

// childAttr: only Linux kills a child when its parent dies; elsewhere a
// load generator killed mid-run leaves its spawned server running.
func childAttr() *syscall.SysProcAttr { return nil }
