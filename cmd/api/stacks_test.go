package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// The server runs with its goroutines starting on 2 KiB stacks: it
// re-executes itself with adaptivestackstart=0 added to GODEBUG, keeping
// what GODEBUG already held, and leaves an operator's own
// adaptivestackstart alone. Read from the running process's environment,
// which the runtime read as it started.
func TestServerStartsWithSmallStacks(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs Linux: the check reads the server's environment from /proc/<pid>/environ")
	}
	for _, tc := range []struct{ godebug, want string }{
		{"", "adaptivestackstart=0"},
		{"madvdontneed=1", "madvdontneed=1,adaptivestackstart=0"},
		{"adaptivestackstart=1", "adaptivestackstart=1"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "GODEBUG=") {
					cmd.Env = append(cmd.Env, kv)
				}
			}
			if tc.godebug != "" {
				cmd.Env = append(cmd.Env, "GODEBUG="+tc.godebug)
			}
			cmd.Env = append(cmd.Env,
				"CALLSIG_TEST_MAIN_ARGS=-addr 127.0.0.1:0 -db "+filepath.Join(t.TempDir(), "callsig.db"),
				"CALLSIG_JWT_SECRET="+testSecret)
			logs := &logBuffer{}
			cmd.Stdout, cmd.Stderr = logs, logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			})
			listening(t, logs) // by then it has re-executed, if it does
			environ, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/environ")
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, kv := range bytes.Split(environ, []byte{0}) {
				if v, ok := strings.CutPrefix(string(kv), "GODEBUG="); ok {
					got = append(got, v)
				}
			}
			if len(got) != 1 || got[0] != tc.want {
				t.Fatalf("the server runs with GODEBUG %q, want exactly %q", got, tc.want)
			}
		})
	}
}
