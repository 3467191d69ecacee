//go:build unix

package app

import "syscall"

// openFileLimit is the process's soft RLIMIT_NOFILE.
func openFileLimit() (int, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	return int(min(uint64(rl.Cur), 1<<30)), nil
}
