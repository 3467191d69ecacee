package chaos

import (
	"flag"
	"strings"
	"testing"

	"callsig/internal/testkit"
)

// long runs the checks for minutes instead of seconds: go test ./chaos -chaos.long
var long = flag.Bool("chaos.long", false, "run the chaos and linearizability checks for minutes")

// backends picks the backends of the linearizability check: sqlite (the
// default), postgres, cluster, comma-separated, or all (the default of
// -chaos.long). The kill -9 check runs on all of them either way.
var backends = flag.String("chaos.backends", "", "backends of the linearizability check: sqlite,postgres,cluster or all (default sqlite; all with -chaos.long)")

// chaosBackends is -chaos.backends as testkit backends.
func chaosBackends(t *testing.T) []testkit.Backend {
	spec := *backends
	if spec == "" {
		spec = "sqlite"
		if *long {
			spec = "all"
		}
	}
	if spec == "all" {
		return testkit.Backends
	}
	var out []testkit.Backend
	for _, name := range strings.Split(spec, ",") {
		found := false
		for _, b := range testkit.Backends {
			if b.String() == strings.TrimSpace(name) {
				out, found = append(out, b), true
			}
		}
		if !found {
			t.Fatalf("-chaos.backends: no backend %q (sqlite, postgres, cluster, all)", name)
		}
	}
	return out
}
