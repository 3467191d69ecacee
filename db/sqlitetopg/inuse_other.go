//go:build !linux

package sqlitetopg

// inUse is not checked off Linux: the help text asks for a stopped node.
func inUse(string) (bool, error) { return false, nil }
