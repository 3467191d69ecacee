package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	// The client oapi-codegen generates imports these two. They are
	// imported here so that go.mod keeps them (go mod tidy) and CI's module
	// download fetches them: the temporary module below builds offline.
	_ "github.com/oapi-codegen/runtime"
	_ "go.yaml.in/yaml/v3"

	"callsig/internal/testkit"
)

// clientProgram drives the generated client: it creates a call from alice
// to bob, reads it back and prints both answers as JSON. It uses the
// generated names a third-party backend would use, so a rename that
// breaks them fails here.
const clientProgram = `package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
)

func main() {
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(baseURL, token string) error {
	ctx := context.Background()
	c, err := NewClientWithResponses(baseURL, WithRequestEditorFn(func(_ context.Context, req *http.Request) error {
		req.Header.Set("Authorization", "Bearer "+token)
		return nil
	}))
	if err != nil {
		return err
	}
	key := IdempotencyKey("codegen-test-1")
	device := DeviceID("laptop")
	extended := ExtendedData("from the generated client")
	created, err := c.CreateCallWithResponse(ctx, &CreateCallParams{IdempotencyKey: &key, XDeviceID: &device},
		CreateCallJSONRequestBody{Invitees: Invitees{"bob"}, ExtendedData: &extended})
	if err != nil {
		return fmt.Errorf("create call: %w", err)
	}
	if created.JSON201 == nil {
		return fmt.Errorf("create call: status %d: %s", created.StatusCode(), created.Body)
	}
	got, err := c.GetCallWithResponse(ctx, CallIDPath(created.JSON201.CallID), &GetCallParams{XDeviceID: &device})
	if err != nil {
		return fmt.Errorf("get call: %w", err)
	}
	if got.JSON200 == nil {
		return fmt.Errorf("get call: status %d: %s", got.StatusCode(), got.Body)
	}
	var result struct {
		Created *CreateCallResult
		Got     *CallInfo
	}
	result.Created, result.Got = created.JSON201, got.JSON200
	return json.NewEncoder(os.Stdout).Encode(result)
}
`

// TestGeneratedGoClient generates a Go client from openapi.yaml with
// oapi-codegen (the tool pinned in go.mod), builds and vets it in a
// temporary module, and makes real calls through it against a real server:
// third-party backends generate their client this way.
//
// The temporary module copies this module's go.mod and go.sum, so it uses
// exactly the versions CI has downloaded; GOPROXY=off proves that it needs
// nothing from the network, and -mod=readonly that no go.mod (this
// module's included, where go tool runs) is rewritten.
func TestGeneratedGoClient(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	env := append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=readonly", "GOWORK=off", "GOTOOLCHAIN=local")
	goCmd := func(wd string, args ...string) []byte {
		t.Helper()
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir, cmd.Env = wd, env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
		}
		return out
	}

	goCmd(".", "tool", "oapi-codegen", "-generate", "types,client", "-package", "main",
		"-o", filepath.Join(dir, "client.gen.go"), "openapi.yaml")
	writeTempModule(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(clientProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	goCmd(dir, "vet", ".")
	goCmd(dir, "build", "-o", "client", ".")

	s := testkit.Start(t)
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "client"), s.URL, s.Token("alice"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("generated client: %v\n%s", err, stderr.Bytes())
	}
	var result struct {
		Created struct {
			CallID        string
			ErrorUserList []any
			Call          struct{ CallID, Caller, ExtendedData string }
		}
		Got struct {
			CallID, Caller, Mode, State, ExtendedData string
			CallUserList                              []struct{ UserID, State string }
		}
	}
	if err := json.Unmarshal(out, &result); err != nil {
		t.Fatalf("client output %q: %v", out, err)
	}
	c, g := result.Created, result.Got
	if c.CallID == "" || c.Call.CallID != c.CallID || g.CallID != c.CallID || len(c.ErrorUserList) != 0 {
		t.Fatalf("created %+v, read back %+v", c, g)
	}
	if g.Caller != "alice" || g.Mode != "general" || g.State != "started" || g.ExtendedData != "from the generated client" {
		t.Errorf("read back %+v", g)
	}
	if len(g.CallUserList) != 2 || g.CallUserList[0].UserID != "alice" || g.CallUserList[1].UserID != "bob" {
		t.Errorf("callUserList %+v, want alice and bob", g.CallUserList)
	}
	// The call is real: bob sees it through the API.
	s.Client("bob").Get("/calls/" + c.CallID).Want(200)
}

// writeTempModule writes dir/go.mod and dir/go.sum: this module's, renamed,
// so the generated client builds with the versions this module pins.
func writeTempModule(t *testing.T, dir string) {
	t.Helper()
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	moduleLine := regexp.MustCompile(`(?m)^module callsig$`)
	if !moduleLine.Match(mod) {
		t.Fatal("../go.mod does not declare module callsig")
	}
	mod = moduleLine.ReplaceAll(mod, []byte("module callsigclient"))
	sum, err := os.ReadFile("../go.sum")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), mod, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644); err != nil {
		t.Fatal(err)
	}
}
