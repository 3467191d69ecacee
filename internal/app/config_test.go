package app

import (
	"errors"
	"strings"
	"testing"
	"time"

	"callsig/webhooks"
)

// The identity provider's settings come from flags or CALLSIG_* variables
// like every other, with sub as the default user claim.
func TestConfigIdentityProvider(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c, err := ParseConfig("test", nil, env(nil), nil)
	if err != nil || c.JWTUserClaim != "sub" || c.JWKSURL != "" {
		t.Fatalf("defaults: %q %q %v", c.JWTUserClaim, c.JWKSURL, err)
	}
	c, err = ParseConfig("test", nil, env(map[string]string{
		"CALLSIG_JWKS_URL": "https://idp.example/.well-known/jwks.json", "CALLSIG_JWT_USER_CLAIM": "https://example.com/uid",
		"CALLSIG_JWT_AUDIENCE": "callsig",
	}), nil)
	if err != nil || c.JWKSURL != "https://idp.example/.well-known/jwks.json" || c.JWTUserClaim != "https://example.com/uid" {
		t.Fatalf("from the environment: %q %q %v", c.JWKSURL, c.JWTUserClaim, err)
	}
	if c, err := ParseConfig("test", []string{"-admin-token", strings.Repeat("a", 32)}, env(nil), nil); err != nil || c.AdminToken != strings.Repeat("a", 32) {
		t.Fatalf("an admin token of 32 bytes: %q %v", c.AdminToken, err)
	}
	c, err = ParseConfig("test", []string{"-jwks-url", "http://127.0.0.1:9000/jwks", "-jwt-user-claim", "email", "-jwt-issuer", "http://127.0.0.1:9000"},
		env(map[string]string{"CALLSIG_JWT_USER_CLAIM": "uid"}), nil)
	if err != nil || c.JWKSURL != "http://127.0.0.1:9000/jwks" || c.JWTUserClaim != "email" {
		t.Fatalf("flags win: %q %q %v", c.JWKSURL, c.JWTUserClaim, err)
	}
	for _, bad := range [][]string{
		// A provider's keys sign other apps' tokens too: iss or aud must
		// say which are for this one.
		{"-jwks-url", "https://idp.example/jwks"},
		{"-jwks-url", "idp.example/jwks"},
		{"-jwks-url", "ftp://idp.example/jwks"},
		{"-jwks-url", "https:///jwks"},
		{"-jwt-user-claim", ""},
		{"-jwt-user-claim", "exp"},
		{"-jwt-user-claim", "role"},
		{"-jwt-user-claim", `a"b`},
		{"-jwt-user-claim", strings.Repeat("c", 129)},
		// Failed logins are not counted: a short admin token is guessed.
		{"-admin-token", "z9"},
		{"-admin-token", strings.Repeat("a", 31)},
	} {
		if _, err := ParseConfig("test", bad, env(nil), nil); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// The garbage collector's headroom is 32 MiB unless configured; 0 turns
// it off, and a negative one is refused.
func TestConfigGCHeadroom(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want int
	}{
		{nil, nil, 32},
		{nil, map[string]string{"CALLSIG_GC_HEADROOM_MIB": "0"}, 0},
		{[]string{"-gc-headroom-mib", "128"}, map[string]string{"CALLSIG_GC_HEADROOM_MIB": "0"}, 128},
	} {
		c, err := ParseConfig("test", tt.args, env(tt.env), nil)
		if err != nil || c.GCHeadroomMiB != tt.want {
			t.Errorf("%v %v: %d, %v; want %d", tt.args, tt.env, c.GCHeadroomMiB, err, tt.want)
		}
	}
	if _, err := ParseConfig("test", []string{"-gc-headroom-mib", "-1"}, env(nil), nil); err == nil || !strings.Contains(err.Error(), "gc-headroom-mib") {
		t.Errorf("a negative headroom: %v", err)
	}
}

// The event log keeps at least the 24 hours of replay the contract
// promises; more is allowed.
func TestConfigEventRetention(t *testing.T) {
	env := func(string) string { return "" }
	for _, ok := range []string{"24h", "168h"} {
		if c, err := ParseConfig("test", []string{"-event-retention", ok}, env, nil); err != nil || c.EventRetention.String() == "0s" {
			t.Errorf("-event-retention %s: %v", ok, err)
		}
	}
	for _, bad := range []string{"23h59m", "10m", "0s", "-1h"} {
		if _, err := ParseConfig("test", []string{"-event-retention", bad}, env, nil); err == nil || !strings.Contains(err.Error(), "event-retention") {
			t.Errorf("-event-retention %s: %v, want refused", bad, err)
		}
	}
}

// The startup log names the database without its password.
func TestRedactedDB(t *testing.T) {
	for dsn, want := range map[string]string{
		"callsig.db": "callsig.db",
		"postgres://callsig:S3cretPW@db.example:5432/callsig?sslmode=require": "postgres://callsig:xxxxx@db.example:5432/callsig?sslmode=require",
		"postgresql://db.example/callsig":                                     "postgresql://db.example/callsig",
	} {
		if got := RedactedDB(dsn); got != want || strings.Contains(got, "S3cretPW") {
			t.Errorf("RedactedDB(%q) = %q, want %q", dsn, got, want)
		}
	}
}

// The webhook dispatcher's bounds default to the package's and can be
// set; a share given larger than the workers, or none, is refused.
func TestConfigWebhookWorkersAndShare(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tt := range []struct {
		args                   []string
		env                    map[string]string
		wantWorkers, wantShare int
	}{
		{nil, nil, webhooks.DefaultWorkers, webhooks.DefaultShare},
		{nil, map[string]string{"CALLSIG_WEBHOOK_SHARE": "64", "CALLSIG_WEBHOOK_WORKERS": "512"}, 512, 64},
		{[]string{"-webhook-share", "8"}, map[string]string{"CALLSIG_WEBHOOK_SHARE": "64"}, webhooks.DefaultWorkers, 8},
		// Fewer workers than the default share, the share not given: all
		// of them.
		{nil, map[string]string{"CALLSIG_WEBHOOK_WORKERS": "16"}, 16, 16},
	} {
		c, err := ParseConfig("test", tt.args, env(tt.env), nil)
		if err != nil || c.WebhookWorkers != tt.wantWorkers || c.WebhookShare != tt.wantShare {
			t.Errorf("%v %v: workers %d share %d, %v; want %d, %d", tt.args, tt.env, c.WebhookWorkers, c.WebhookShare, err, tt.wantWorkers, tt.wantShare)
		}
	}
	for _, bad := range [][]string{
		{"-webhook-share", "0"},
		{"-webhook-workers", "0"},
		{"-webhook-workers", "5000"},
		{"-webhook-workers", "8", "-webhook-share", "9"},
	} {
		if _, err := ParseConfig("test", bad, env(nil), nil); err == nil || !strings.Contains(err.Error(), "webhook-") {
			t.Errorf("%v: %v", bad, err)
		}
	}
}

// The bound on an endpoint's pending deliveries defaults to the package's,
// is set by flag or environment, and is at least 1.
func TestConfigWebhookMaxPending(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want int
	}{
		{nil, nil, webhooks.DefaultMaxPending},
		{nil, map[string]string{"CALLSIG_WEBHOOK_MAX_PENDING": "5000"}, 5000},
		{[]string{"-webhook-max-pending", "7"}, map[string]string{"CALLSIG_WEBHOOK_MAX_PENDING": "5000"}, 7},
	} {
		c, err := ParseConfig("test", tt.args, env(tt.env), nil)
		if err != nil || c.WebhookMaxPending != tt.want {
			t.Errorf("%v %v: max pending %d, %v; want %d", tt.args, tt.env, c.WebhookMaxPending, err, tt.want)
		}
	}
	for _, bad := range []string{"0", "-1"} {
		if _, err := ParseConfig("test", []string{"-webhook-max-pending", bad}, env(nil), nil); err == nil || !strings.Contains(err.Error(), "webhook-max-pending") {
			t.Errorf("-webhook-max-pending %s: %v", bad, err)
		}
	}
}

// The presence lease is a cluster setting: left unset, it is 15 s or
// twice the heartbeat timeout if that is shorter, so a short heartbeat
// timeout starts a server without a lease of its own (5s on SQLite exited
// 1 with "presence-lease must be at least 1s and at most twice
// heartbeat-timeout"). A lease given is checked on SQLite too, and a
// cluster refuses a heartbeat timeout too short for any lease.
func TestConfigPresenceLease(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	pg := []string{"-db", "postgres://callsig@127.0.0.1/callsig", "-jwt-secret", strings.Repeat("k", 32)}
	for _, tt := range []struct {
		name      string
		args      []string
		env       map[string]string
		wantLease time.Duration
		wantErr   string
	}{
		{"defaults", []string{"-db", "x.db"}, nil, 15 * time.Second, ""},
		{"heartbeat 5s on sqlite", []string{"-db", "x.db"}, map[string]string{"CALLSIG_HEARTBEAT_TIMEOUT": "5s"}, 10 * time.Second, ""},
		{"heartbeat 3s on sqlite", []string{"-db", "x.db", "-heartbeat-timeout", "3s"}, nil, 6 * time.Second, ""},
		{"heartbeat 200ms on sqlite", []string{"-db", "x.db", "-heartbeat-timeout", "200ms"}, nil, 400 * time.Millisecond, ""},
		{"heartbeat 1m", []string{"-heartbeat-timeout", "1m"}, nil, 15 * time.Second, ""},
		{"heartbeat 5s on postgres", append([]string{"-heartbeat-timeout", "5s"}, pg...), nil, 10 * time.Second, ""},
		{"lease given", []string{"-presence-lease", "40s", "-heartbeat-timeout", "20s"}, nil, 40 * time.Second, ""},
		{"lease from the environment", nil, map[string]string{"CALLSIG_PRESENCE_LEASE": "4s", "CALLSIG_HEARTBEAT_TIMEOUT": "3s"}, 4 * time.Second, ""},
		{"lease 0 is the default", []string{"-presence-lease", "0", "-heartbeat-timeout", "3s"}, nil, 6 * time.Second, ""},
		{"lease given too long on sqlite", []string{"-db", "x.db", "-heartbeat-timeout", "5s", "-presence-lease", "15s"}, nil, 0, "presence-lease 15s must be at least 1s and at most twice heartbeat-timeout (5s)"},
		{"lease given too short", []string{"-presence-lease", "500ms"}, nil, 0, "presence-lease 500ms must be at least 1s"},
		{"lease given negative", []string{"-presence-lease", "-1s"}, nil, 0, "presence-lease -1s must be"},
		{"heartbeat too short for a cluster", append([]string{"-heartbeat-timeout", "400ms"}, pg...), nil, 0, "heartbeat-timeout 400ms is too short for a PostgreSQL db"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig("test", tt.args, env(tt.env), nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("%v %v: %v, want an error saying %q", tt.args, tt.env, err, tt.wantErr)
				}
				return
			}
			if err != nil || c.presenceLease() != tt.wantLease {
				t.Fatalf("%v %v: lease %v, %v; want %v", tt.args, tt.env, c.presenceLease(), err, tt.wantLease)
			}
		})
	}

	// A Config built by hand (tests, New) follows the heartbeat timeout
	// too.
	c := Defaults()
	c.DB, c.NodeID, c.HeartbeatTimeout = "x.db", "n1", 5*time.Second
	if err := errors.Join(c.validateCluster()...); err != nil || c.presenceLease() != 10*time.Second {
		t.Errorf("Defaults with heartbeat 5s: lease %v, %v; want 10s", c.presenceLease(), err)
	}
}
