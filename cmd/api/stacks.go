package main

import (
	"os"
	"strings"
	"syscall"
)

// stacksSetting is the runtime setting smallStacks adds to GODEBUG.
//
// Why: Go starts each goroutine with a stack the size of the average one
// in use at the last collection (adaptivestackstart, on by default). When
// many clients open their streams at once (a reconnection storm after a
// deploy, say), the collections see the handlers in flight, deep in
// net/http, validation and SQLite, and that average crosses 2 KiB: every
// stream goroutine started then gets 4 KiB. A parked goroutine never
// shrinks back (the runtime halves a stack only when under a quarter of it
// is used, counting 800 bytes of headroom), so an idle stream's two
// goroutines held 8 KiB of stack instead of 4 for as long as it lived
// (docs/benchmarks.md, "SSE memory: idle streams"). With the setting off,
// goroutines start at 2 KiB and grow on demand, as before Go 1.19.
const stacksSetting = "adaptivestackstart=0"

// smallStacks re-executes the server with stacksSetting in GODEBUG, unless
// GODEBUG already names adaptivestackstart (the operator's choice wins).
// The runtime reads the setting only as the process starts, and the go
// command refuses it in a //go:debug line, so exec is the one way in. It
// keeps the process id, arguments and the rest of the environment; if it
// cannot exec, the server runs on as it is.
func smallStacks() {
	godebug := os.Getenv("GODEBUG")
	if strings.Contains(godebug, "adaptivestackstart=") {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	if godebug != "" {
		godebug += ","
	}
	env := []string{"GODEBUG=" + godebug + stacksSetting}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	_ = syscall.Exec(exe, os.Args, env) // returns only if it failed
}
