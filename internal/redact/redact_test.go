package redact

import (
	"errors"
	"strings"
	"testing"
)

func TestErrAndURL(t *testing.T) {
	tests := []struct {
		raw, err string
		want     string
	}{
		{"nats://callsig:hunter2@127.0.0.1:bad", `parse "nats://callsig:hunter2@127.0.0.1:bad": invalid port`, `parse "nats://callsig:xxxxx@127.0.0.1:bad": invalid port`},
		{"postgres://u:p%40ss@db/x", "connect postgres://u:p%40ss@db/x: refused", "connect postgres://u:xxxxx@db/x: refused"},
		{"https://hooks.example/x", "no password here", "no password here"},
		{"https://user@hooks.example/x", "user only", "user only"},
	}
	for _, tt := range tests {
		if got := Err(errors.New(tt.err), tt.raw).Error(); got != tt.want {
			t.Errorf("Err(%q) = %q, want %q", tt.err, got, tt.want)
		}
	}
	if Err(nil, "nats://a:b@c") != nil {
		t.Error("Err(nil) is not nil")
	}
	if got := URL("https://hooks:hunter2@hooks.example/cb"); strings.Contains(got, "hunter2") {
		t.Errorf("URL = %s", got)
	}
	if got := URL("nats://a:hunter2@h:bad"); strings.Contains(got, "hunter2") {
		t.Errorf("URL of an unparsable one = %s", got)
	}
}

// A password in a URL's query (postgres://u@h/db?password=...) is kept out
// of errors and quoted URLs too.
func TestQueryPassword(t *testing.T) {
	raw := "postgres://u@db:5432/x?sslmode=disable&password=hunter2"
	if got := Err(errors.New("connect "+raw+": refused"), raw).Error(); strings.Contains(got, "hunter2") {
		t.Errorf("Err = %q", got)
	}
	if got := URL(raw); strings.Contains(got, "hunter2") || !strings.Contains(got, "sslmode=disable") {
		t.Errorf("URL = %s", got)
	}
}
