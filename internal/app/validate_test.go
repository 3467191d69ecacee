package app

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func noEnv(string) string { return "" }

// Invalid values are refused at startup, never silently ignored: a zero
// shutdown timeout made a clean SIGTERM exit 1, and a negative or NaN
// rate limit switched rate limiting off (an operations review).
func TestInvalidValuesAreRefused(t *testing.T) {
	for _, bad := range [][]string{
		{"-shutdown-timeout", "0s"},
		{"-shutdown-timeout", "-5s"},
		{"-rate-limit", "-10"},
		{"-rate-limit", "NaN"},
		{"-rate-burst", "-1"},
		// A unit left out: a stop that is never clean, a server that
		// reads no request.
		{"-shutdown-timeout", "15ns"},
		{"-read-timeout", "1ns"},
		{"-read-timeout", "30ms"},
		// No bearer header carries them: the token never matched.
		{"-admin-token", strings.Repeat("a", 40) + "\n"},
		{"-admin-token", " " + strings.Repeat("a", 40)},
		{"-admin-token", strings.Repeat("a", 20) + "\x00" + strings.Repeat("a", 20)},
	} {
		if c, err := ParseConfig("callsig", bad, noEnv, nil); err == nil {
			t.Errorf("%v accepted (ShutdownTimeout=%v RateLimit=%v RateBurst=%d)", bad, c.ShutdownTimeout, c.RateLimit, c.RateBurst)
		}
	}
}

// A stray word stopped flag parsing: every flag after it was dropped and
// the server started with defaults ("serve -jwt-secret x" in development
// mode).
func TestStrayArgumentIsRefused(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "-addr", "127.0.0.1:9999", "-jwt-secret", "x"},
		{"-db", "/tmp/x.db", "start", "-addr", ":9999"},
	} {
		c, err := ParseConfig("callsig", args, noEnv, nil)
		if err == nil {
			t.Errorf("%q accepted: Addr=%q AddrSet=%v DB=%q JWTSecret=%q (the flags after the stray word were ignored)", args, c.Addr, c.AddrSet, c.DB, c.JWTSecret)
		}
	}
}

// An explicit empty -addr or -db was accepted: -addr "" listened on a
// random port of every interface (in development mode, which mints tokens
// for anyone); -db "" failed only after writing ".secret" here.
func TestEmptyFlagValuesAreRefused(t *testing.T) {
	for _, args := range [][]string{{"-addr", ""}, {"-db", ""}} {
		if c, err := ParseConfig("callsig", args, noEnv, nil); err == nil {
			t.Errorf("%q accepted: Addr=%q AddrSet=%v DB=%q", args, c.Addr, c.AddrSet, c.DB)
		}
	}
}

// A development secret file others can read (0644: restored from a backup,
// written by hand) was reused without a word, though anyone on the machine
// who reads it mints tokens for every user. It is refused.
func TestDevSecretReadableByOthersIsRefused(t *testing.T) {
	db := filepath.Join(t.TempDir(), "callsig.db")
	if err := os.WriteFile(db+".secret", []byte(strings.Repeat("s", 43)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(db+".secret", 0o644); err != nil {
		t.Fatal(err)
	}
	sec, dev, _, err := ResolveSecret(Config{DB: db})
	if err == nil && dev && len(sec) > 0 {
		t.Fatalf("a world-readable development secret (0644) was reused silently")
	}
}

// Two processes started at once on one database agree on one secret: the
// second read the file between the first's create and its write, and
// failed telling the operator to delete a good secret (33 of 400 starts).
func TestDevSecretConcurrentStart(t *testing.T) {
	fails := 0
	var msg string
	for range 200 {
		db := filepath.Join(t.TempDir(), "callsig.db")
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for j := range 2 {
			wg.Go(func() { _, _, _, errs[j] = ResolveSecret(Config{DB: db}) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				fails++
				msg = err.Error()
			}
		}
	}
	if fails > 0 {
		t.Fatalf("%d of 400 concurrent starts failed: %s", fails, msg)
	}
}

// A CALLSIG_* variable no setting reads (a typo: CALLSIG_HEARTBEAT_TIMOUT)
// was ignored without a word, and the server started with the default.
// UnknownEnv names it, for cmd/api to warn; every setting's variable and
// the tests' own variables are known.
func TestUnknownEnv(t *testing.T) {
	got := UnknownEnv([]string{"CALLSIG_HEARTBEAT_TIMOUT=5s", "CALLSIG_DB=x.db", "CALLSIG_JWT_SECRET=a=b", "CALLSIG_CORS_ORIGINS=*",
		"CALLSIG_PRESENCE_LEASE=2s", "CALLSIG_TEST_LOG=1", "HOME=/root", "CALLSIG_ADMINTOKEN=x"})
	if strings.Join(got, ",") != "CALLSIG_HEARTBEAT_TIMOUT,CALLSIG_ADMINTOKEN" {
		t.Fatalf("UnknownEnv = %q", got)
	}
}

// A JWT secret with white space at an end is accepted (a service reading
// the same file signs with the same bytes) but named in a warning.
func TestSecretWarning(t *testing.T) {
	for secret, warn := range map[string]bool{
		"":                                   false,
		"secretsecretsecretsecretsecret12":   false,
		"secretsecretsecretsecretsecret12\n": true,
		" secretsecretsecretsecretsecret12":  true,
	} {
		if got := (Config{JWTSecret: secret}).SecretWarning(); (got != "") != warn {
			t.Errorf("secret %q: warning %q, want one: %v", secret, got, warn)
		}
	}
}

// Kubernetes gives every container variables for each service of its
// namespace: a service named callsig (or callsig-nats) gives CALLSIG_*
// ones, which named no setting and were warned about as typos at every
// start. A guess at a setting (CALLSIG_PORT=9000) is still named.
func TestUnknownEnvIgnoresKubernetesServiceLinks(t *testing.T) {
	got := UnknownEnv([]string{
		"CALLSIG_SERVICE_HOST=10.96.0.12", "CALLSIG_SERVICE_PORT=8080", "CALLSIG_SERVICE_PORT_HTTP=8080",
		"CALLSIG_PORT=tcp://10.96.0.12:8080", "CALLSIG_PORT_8080_TCP=tcp://10.96.0.12:8080",
		"CALLSIG_PORT_8080_TCP_PROTO=tcp", "CALLSIG_PORT_8080_TCP_PORT=8080", "CALLSIG_PORT_8080_TCP_ADDR=10.96.0.12",
		"CALLSIG_NATS_SERVICE_HOST=10.96.0.13", "CALLSIG_NATS_PORT=tcp://10.96.0.13:4222",
		"CALLSIG_NATS_PORT_4222_TCP_ADDR=10.96.0.13",
		"CALLSIG_HEARTBEAT_TIMOUT=5s", "CALLSIG_PORT=9000",
	})
	if strings.Join(got, ",") != "CALLSIG_HEARTBEAT_TIMOUT,CALLSIG_PORT" {
		t.Fatalf("UnknownEnv = %q", got)
	}
}
