//go:build !unix

package main

import "errors"

// execve is not available here: the server runs with the runtime's
// default stacks.
func execve(string, []string, []string) error { return errors.New("exec: not supported") }
