package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"golang.org/x/sync/errgroup"
)

// The npm tools these tests run are pinned in tools/package-lock.json;
// scripts/test (the README's test command) installs Node.js and runs
// `npm ci` in tools/ when they are missing.

// npmTool returns the path of a binary from tools/node_modules, failing
// with what to run when Node.js or the packages are not installed.
func npmTool(t *testing.T, name string) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is not installed: the spec's lint and TypeScript checks need Node.js >= 20.19; scripts/test installs it")
	}
	bin, err := filepath.Abs(filepath.Join("tools", "node_modules", ".bin", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s is not installed: run `npm ci` in api/tools (scripts/test does it when node_modules is missing): %v", name, err)
	}
	return bin
}

// runTool runs an npm tool in dir and returns its stdout and exit error.
func runTool(t *testing.T, dir, bin string, args ...string) ([]byte, []byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	// No telemetry, no update check, no colour codes in the output.
	cmd.Env = append(os.Environ(), "REDOCLY_TELEMETRY=off", "REDOCLY_SUPPRESS_UPDATE_NOTICE=true", "NO_COLOR=1", "CI=true")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.Bytes(), stderr.Bytes(), err
}

// lintProblem is one entry of `redocly lint --format=json`.
type lintProblem struct {
	RuleID   string `json:"ruleId"`
	Severity string `json:"severity"`
	Message  string `json:"message"`
	Location []struct {
		Pointer string `json:"pointer"`
	} `json:"location"`
}

// TestRedoclyLint lints openapi.yaml with Redocly CLI's built-in
// recommended rules (run from an empty directory, so no redocly.yaml
// can change them). Errors always fail. Warnings fail too, except the
// ones the spec keeps on purpose (acceptedLintWarning says which and why),
// so a new warning is a decision, not noise.
func TestRedoclyLint(t *testing.T) {
	t.Parallel()
	redocly := npmTool(t, "redocly")
	spec, err := filepath.Abs("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr, runErr := runTool(t, t.TempDir(), redocly, "lint", "--format=json", spec)
	var report struct {
		Totals struct {
			Errors   int `json:"errors"`
			Warnings int `json:"warnings"`
		} `json:"totals"`
		Problems []lintProblem `json:"problems"`
	}
	if err := json.Unmarshal(stdout, &report); err != nil {
		t.Fatalf("redocly lint: %v (%v)\nstdout: %s\nstderr: %s", err, runErr, stdout, stderr)
	}
	doc := mustLoad(t)
	for _, p := range report.Problems {
		where := ""
		if len(p.Location) > 0 {
			where = p.Location[0].Pointer
		}
		switch {
		case p.Severity == "error":
			t.Errorf("lint error %s at %s: %s", p.RuleID, where, p.Message)
		case !acceptedLintWarning(doc.Paths.Map(), p.RuleID, where):
			t.Errorf("lint warning %s at %s: %s (fix it, or accept it in acceptedLintWarning with the reason)", p.RuleID, where, p.Message)
		default:
			t.Logf("accepted warning %s at %s", p.RuleID, where)
		}
	}
	if report.Totals.Errors == 0 && runErr != nil {
		t.Errorf("redocly lint failed without reporting an error: %v\n%s", runErr, stderr)
	}
}

// acceptedLintWarning says whether a warning of the recommended rules is
// one the spec keeps on purpose:
//   - info-license: the project has chosen no license to state.
//   - operation-4xx-response / operation-2xx-response on public operations
//     (security: []): health, readiness, the spec, metrics and the demo
//     answer no client error, and GET /demo only redirects (301) to the
//     page; listing a 4xx they never send would make the spec lie.
//   - no-unused-components for schemas named *Data (the `data` of each
//     event on GET /events, documented for clients and checked by
//     TestDocumentationSchemas; an SSE stream has no schema to reference
//     them from) and the MethodNotAllowed response (405 applies to every
//     path, so it is not listed per operation).
func acceptedLintWarning(paths map[string]*openapi3.PathItem, rule, pointer string) bool {
	switch rule {
	case "info-license":
		return pointer == "#/info"
	case "operation-4xx-response", "operation-2xx-response":
		path, method, ok := operationAt(pointer)
		if !ok || paths[path] == nil {
			return false
		}
		op := paths[path].GetOperation(strings.ToUpper(method))
		return op != nil && op.Security != nil && len(*op.Security) == 0
	case "no-unused-components":
		name, isSchema := strings.CutPrefix(pointer, "#/components/schemas/")
		return (isSchema && strings.HasSuffix(name, "Data")) || pointer == "#/components/responses/MethodNotAllowed"
	}
	return false
}

// operationAt parses "#/paths/~1calls~1{callID}/get/responses" into the
// path and the method.
func operationAt(pointer string) (path, method string, ok bool) {
	rest, ok := strings.CutPrefix(pointer, "#/paths/")
	if !ok {
		return "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) < 2 {
		return "", "", false
	}
	path = strings.NewReplacer("~1", "/", "~0", "~").Replace(parts[0])
	return path, parts[1], true
}

// typeCheck uses the types openapi-typescript generates the way a web app
// would, so a rename or a type the generator cannot express fails tsc.
const typeCheck = `import type { components, operations, paths } from "./callsig";

type Schemas = components["schemas"];
type CreateCall = paths["/calls"]["post"];

const request: CreateCall["requestBody"]["content"]["application/json"] = {
  invitees: ["bob", "carol"],
  mode: "advanced",
  timeout: 30,
  extendedData: "{\"room\":\"r1\"}",
};

function describe(created: CreateCall["responses"][201]["content"]["application/json"]): string {
  const call: Schemas["CallInfo"] = created.call;
  const states = call.callUserList.map((u: Schemas["CallUserInfo"]) => u.userID + ":" + u.state);
  const refused = created.errorUserList.map((e) => e.userID + ":" + e.reason);
  return created.callID + " " + call.mode + " " + states.join(",") + " " + refused.join(",");
}

function problem(p: operations["getCall"]["responses"][404]["content"]["application/problem+json"]): string {
  return p.code + ": " + (p.detail ?? "");
}

const lastEventID: operations["streamEvents"]["parameters"]["query"] = { lastEventID: 17 };

// @ts-expect-error a call's mode is "general" or "advanced"
const wrongMode: Schemas["CreateCallRequest"] = { invitees: ["bob"], mode: "group" };

export { describe, lastEventID, problem, request, wrongMode };
`

// TestTypeScriptTypes generates TypeScript types from openapi.yaml with
// openapi-typescript and type-checks a small file using them with
// tsc --strict: what a web app does with the spec.
func TestTypeScriptTypes(t *testing.T) {
	t.Parallel()
	gen, tsc := npmTool(t, "openapi-typescript"), npmTool(t, "tsc")
	spec, err := filepath.Abs("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// By default openapi-typescript makes every property with a default
	// required, request bodies included, so a web app would have to send
	// mode, timeout and enableNotReceivedCheck on every POST /calls. The
	// usage below is checked against the types generated with
	// --default-non-nullable false (the flag a web app should use for
	// this spec); the default output is only checked to compile.
	var g errgroup.Group
	for file, args := range map[string][]string{
		"callsig.ts":          {"--default-non-nullable", "false"},
		"callsig-defaults.ts": nil,
	} {
		args = append([]string{spec, "-o", filepath.Join(dir, file)}, args...)
		g.Go(func() error {
			if _, stderr, err := runTool(t, dir, gen, args...); err != nil {
				return fmt.Errorf("openapi-typescript %s: %w\n%s", strings.Join(args, " "), err, stderr)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "check.ts"), []byte(typeCheck), 0o644); err != nil {
		t.Fatal(err)
	}
	// --skipLibCheck skips TypeScript's own lib .d.ts files, not ours.
	stdout, stderr, err := runTool(t, dir, tsc, "--strict", "--noEmit", "--skipLibCheck", "--target", "es2022",
		"--module", "esnext", "--moduleResolution", "bundler", "check.ts", "callsig.ts", "callsig-defaults.ts")
	if err != nil {
		t.Fatalf("tsc --strict: %v\n%s%s", err, stdout, stderr)
	}
}
