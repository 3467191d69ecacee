//go:build !unix

package app

// openFileLimit stands for the open-file limit where there is none to
// read (Windows: sockets are bounded by memory, not by a per-process
// count): the connection cap then defaults to what it would be on a Linux
// host with the usual raised limit.
func openFileLimit() (int, error) { return 16384, nil }
