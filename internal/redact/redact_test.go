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

// NATS takes the user of nats://TOKEN@host, given without a password, for
// a token: it was logged as it was at every connection ("NATS connected"),
// and quoted whole by the error of a malformed URL.
func TestNATSToken(t *testing.T) {
	raw := "nats://s3cr3tTok@127.0.0.1:42x22"
	if got := TokenErr(errors.New(`parse "`+raw+`": invalid port ":42x22" after host`), raw).Error(); strings.Contains(got, "s3cr3tTok") {
		t.Errorf("TokenErr = %q", got)
	}
	if got := TokenErr(errors.New("connect nats://u:hunter2@h: refused"), "nats://u:hunter2@h").Error(); strings.Contains(got, "hunter2") || !strings.Contains(got, "u:xxxxx") {
		t.Errorf("TokenErr with a password = %q", got)
	}
	for raw, want := range map[string]string{
		"nats://s3cr3tTok@127.0.0.1:4222": "nats://xxxxx@127.0.0.1:4222",
		"nats://u:hunter2@127.0.0.1:4222": "nats://u:xxxxx@127.0.0.1:4222",
		"nats://127.0.0.1:4222":           "nats://127.0.0.1:4222",
	} {
		if got := TokenAttr(raw); got != want {
			t.Errorf("TokenAttr(%q) = %q, want %q", raw, got, want)
		}
	}
}

// A query password url.ParseQuery refuses (a ';' in it, an unescaped '%'),
// or one beside another pair it refuses, was left as it was: in
// "callsig listening" (RedactedDB) and in errors quoting the DSN.
func TestQueryPasswordParseQueryRefuses(t *testing.T) {
	for _, raw := range []string{
		"postgres://u@db/x?password=hun;ter2",
		"postgres://u@db/x?sslmode=disable&password=hunter2%zz",
		"postgres://u@db/x?password=hunter2&application_name=100%",
		"postgres://u@db/x?password=hunter%212",
	} {
		err := Err(errors.New("cannot parse `"+raw+"`: invalid connect_timeout"), raw).Error()
		for _, got := range []string{err, URL(raw), Attr(raw)} {
			if strings.Contains(got, "hun") || !strings.Contains(got, "xxxxx") {
				t.Errorf("%s: %q", raw, got)
			}
		}
	}
	// The other pairs stay as they were written.
	if got := Attr("postgres://u@db/x?sslmode=disable&password=p&application_name=100%"); got != "postgres://u@db/x?sslmode=disable&password=xxxxx&application_name=100%" {
		t.Errorf("Attr = %q", got)
	}
}

// NATS takes a comma-separated list of servers: an error about the second
// one (a bad port) quoted its token or password, redacted only in the
// first.
func TestNATSServerListSecrets(t *testing.T) {
	for raw, quoted := range map[string]string{
		"nats://tokA@10.0.0.1:4222,nats://tokB@10.0.0.2:42x22":    "nats://tokB@10.0.0.2:42x22",
		"nats://a:pwA@10.0.0.1:4222, nats://b:pwB@10.0.0.2:42x22": "nats://b:pwB@10.0.0.2:42x22",
	} {
		got := TokenErr(errors.New(`parse "`+quoted+`": invalid port ":42x22" after host`), raw).Error()
		if strings.Contains(got, "tokB") || strings.Contains(got, "pwB") || !strings.Contains(got, "xxxxx") {
			t.Errorf("TokenErr(%q) = %q", raw, got)
		}
	}
}
