package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestSDKTypes compiles web/sdk/test/types-check.ts, an app's use of the
// JavaScript client, against web/sdk/callsig.d.ts under tsc --strict, so
// the declarations say what callsig.js does. tsc is the one pinned in
// api/tools (scripts/test installs it): no new dependency.
func TestSDKTypes(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	tsc := filepath.Join(root, "api", "tools", "node_modules", ".bin", "tsc")
	if _, err := os.Stat(tsc); err != nil {
		t.Fatalf("%s is missing: run `npm ci` in api/tools (scripts/test does)", tsc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tsc, "--strict", "--noEmit", "--target", "es2022",
		"--module", "nodenext", "--moduleResolution", "nodenext", "--lib", "es2022,dom",
		filepath.Join("web", "sdk", "test", "types-check.ts"))
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tsc --strict on web/sdk/test/types-check.ts (callsig.d.ts): %v\n%s", err, out)
	}
}
