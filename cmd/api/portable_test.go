package main

import (
	"os"
	"os/exec"
	"testing"
)

// `go run ./cmd/api` is the README's first command, and developers run it
// on their own machines: the server must build for macOS and Windows too,
// whatever Linux-only system calls the rest of the repository makes
// (those live in files built for Unix or Linux only, beside a fallback).
func TestServerBuildsForMacOSAndWindows(t *testing.T) {
	t.Parallel()
	for _, goos := range []string{"darwin", "windows"} {
		t.Run(goos, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command("go", "build", "-o", os.DevNull, ".")
			cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH=amd64", "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("GOOS=%s go build ./cmd/api: %v\n%s", goos, err, out)
			}
		})
	}
}
