package app

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode"

	"callsig/internal/redact"
	"callsig/webhooks"
)

// Config is the server configuration: flags, with the same names as
// CALLSIG_* environment variables (a flag wins over its variable).
type Config struct {
	Addr string
	// AddrSet is true when the address was configured explicitly (flag or
	// environment): development mode then listens where it is told.
	AddrSet             bool
	DB                  string
	JWTSecret           string
	JWTIssuer           string
	JWTAudience         string
	JWTUserClaim        string
	JWKSURL             string
	AdminToken          string
	HeartbeatTimeout    time.Duration
	NotReceivedAfter    time.Duration
	MaxCallUsers        int
	MaxStartedCalls     int // started calls a user may be in and still start a call, general or advanced (0: no bound)
	WebhookAllowPrivate bool
	WebhookURL          string
	WebhookSecret       string
	WebhookRetention    time.Duration
	WebhookLease        time.Duration
	WebhookWorkers      int // webhook attempts in flight at most, over all endpoints
	WebhookShare        int // webhook attempts in flight to one endpoint at most
	WebhookMaxPending   int // pending webhook deliveries one endpoint may have; the oldest beyond are dropped
	CORSOrigins         []string
	Synchronous         string
	EventRetention      time.Duration
	CallRetention       time.Duration // ended calls older are deleted; 0: kept
	RateLimit           float64
	RateBurst           int
	ShutdownTimeout     time.Duration
	ReadTimeout         time.Duration
	MaxStreamsPerUser   int
	MaxConnections      int
	MaxConnsPerAddress  int
	LogLevel            string
	LogFormat           string
	// GCHeadroomMiB is the heap growth, in MiB, the garbage collector
	// allows between collections at least (0: GOGC alone; see cmd/api).
	GCHeadroomMiB int

	// Cluster mode (a postgres:// DB; see docs/cluster.md).
	NATSURL            string        // NATS server(s) carrying wake-ups between nodes; "" runs one node
	NATSPrefix         string        // subject prefix: clusters sharing one NATS must differ
	NodeID             string        // this node's name in logs, metrics and /readyz (default: random per start)
	PGMaxConns         int           // PostgreSQL connection pool size
	PGStatementTimeout time.Duration // bound on every PostgreSQL statement
	// PresenceLease is how long a silent node's streams still count as
	// online; 0: the default, which follows HeartbeatTimeout (see
	// presenceLease).
	PresenceLease time.Duration
}

// Defaults returns the configuration `go run ./cmd/api` starts with.
func Defaults() Config {
	return Config{
		Addr: ":8080", DB: "callsig.db", JWTUserClaim: "sub", HeartbeatTimeout: 30 * time.Second, NotReceivedAfter: 5 * time.Second,
		MaxCallUsers: 10, MaxStartedCalls: 1000, WebhookRetention: 7 * 24 * time.Hour, WebhookLease: 2 * time.Minute, WebhookWorkers: webhooks.DefaultWorkers, WebhookShare: webhooks.DefaultShare, WebhookMaxPending: webhooks.DefaultMaxPending, Synchronous: "FULL", EventRetention: 24 * time.Hour, CallRetention: 30 * 24 * time.Hour, RateLimit: 50, RateBurst: 100,
		ShutdownTimeout: 15 * time.Second, ReadTimeout: 30 * time.Second, MaxStreamsPerUser: 10, LogLevel: "info", LogFormat: "text",
		GCHeadroomMiB: 32,
		PGMaxConns:    16, PGStatementTimeout: 5 * time.Second, NATSPrefix: "callsig",
	}
}

// ParseConfig reads flags from args and, for flags not given, the
// environment through getenv. extra, when not nil, registers more flags
// (a subcommand's own).
func ParseConfig(name string, args []string, getenv func(string) string, extra func(*flag.FlagSet)) (Config, error) {
	c := Defaults()
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	if extra != nil {
		extra(fs)
	}
	var cors string
	vars := settings(&c, &cors)
	for _, v := range vars {
		switch p := v.p.(type) {
		case *string:
			fs.StringVar(p, v.flag, *p, v.usage+" ($"+v.env+")")
		case *time.Duration:
			fs.DurationVar(p, v.flag, *p, v.usage+" ($"+v.env+")")
		case *int:
			fs.IntVar(p, v.flag, *p, v.usage+" ($"+v.env+")")
		case *bool:
			fs.BoolVar(p, v.flag, *p, v.usage+" ($"+v.env+")")
		case *float64:
			fs.Float64Var(p, v.flag, *p, v.usage+" ($"+v.env+")")
		}
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	// The flag package stops at the first word that is no flag: every
	// flag after it was dropped without a word ("serve -jwt-secret x"
	// started in development mode).
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q: every setting is a flag (-name value); see -h", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, v := range vars {
		val := getenv(v.env)
		if given[v.flag] || val == "" {
			continue
		}
		if err := fs.Set(v.flag, val); err != nil {
			return c, fmt.Errorf("%s=%q: %w", v.env, val, err)
		}
	}
	c.AddrSet = given["addr"] || getenv("CALLSIG_ADDR") != ""
	if !given["webhook-share"] && getenv("CALLSIG_WEBHOOK_SHARE") == "" {
		// Fewer workers than the default share: the share is all of them,
		// rather than a refusal of a setting that was not given.
		c.WebhookShare = min(c.WebhookShare, c.WebhookWorkers)
	}
	if c.NodeID == "" {
		c.NodeID = randomNodeID()
	}
	for _, o := range strings.Split(cors, ",") {
		if o = strings.TrimSpace(o); o != "" {
			c.CORSOrigins = append(c.CORSOrigins, o)
		}
	}
	return c, c.validate()
}

// The shortest read and shutdown timeouts accepted: below them a server
// serves no client, or no stop is clean.
const (
	minReadTimeout     = time.Second
	minShutdownTimeout = time.Second
)

// maxWebhookWorkers bounds webhook-workers: each is a goroutine and an
// outgoing connection, held for up to an attempt's 15 s.
const maxWebhookWorkers = 4096

// claimPattern is what a user claim name may hold: enough for "sub",
// "email" and namespaced claims such as "https://example.com/uid", and
// nothing that needs escaping in a WWW-Authenticate header.
var claimPattern = regexp.MustCompile(`^[A-Za-z0-9_.:/@#-]{1,128}$`)

// registeredClaims cannot hold the user ID: callsig reads them for
// something else.
var registeredClaims = map[string]bool{"iss": true, "aud": true, "exp": true, "nbf": true, "iat": true, "jti": true, "role": true}

func (c Config) validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("addr must not be empty (host:port, or :port for every interface)"))
	}
	if c.DB == "" {
		errs = append(errs, errors.New("db must not be empty (a SQLite file path, or a postgres:// URL)"))
	}
	// Anything but a postgres:// URL is a SQLite path: a libpq key=value
	// string or POSTGRES:// started a one-node SQLite server on a file
	// named after it, password and all (and logged that name). Never
	// repeated here: it may hold a password.
	if !IsPostgresDSN(c.DB) && looksLikeConnString(c.DB) {
		errs = append(errs, errors.New("db looks like a connection string, not a SQLite file path: PostgreSQL is selected by a URL beginning with postgres:// or postgresql:// (lower case), e.g. postgres://user:password@host:5432/database"))
	}
	// A few nanoseconds were accepted: every stop then exited 1 without
	// closing the database ("did not stop within the shutdown timeout (0s
	// left)").
	if c.ShutdownTimeout < minShutdownTimeout {
		errs = append(errs, fmt.Errorf("shutdown-timeout must be at least %s", minShutdownTimeout))
	}
	// NaN compares false with everything: checked as not >= 0.
	if !(c.RateLimit >= 0) || math.IsInf(c.RateLimit, 0) {
		errs = append(errs, errors.New("rate-limit must be a number of requests a second, 0 or more (0: off)"))
	}
	if c.RateBurst < 0 {
		errs = append(errs, errors.New("rate-burst must not be negative"))
	}
	if c.MaxCallUsers < 2 {
		errs = append(errs, errors.New("max-call-users must be at least 2"))
	}
	if c.MaxStartedCalls < 0 {
		errs = append(errs, errors.New("max-started-calls-per-user must not be negative"))
	}
	if c.MaxStreamsPerUser < 1 {
		errs = append(errs, errors.New("max-streams-per-user must be at least 1"))
	}
	if c.MaxConnections < 0 {
		errs = append(errs, errors.New("max-connections must not be negative"))
	}
	if c.MaxConnsPerAddress < 0 {
		errs = append(errs, errors.New("max-connections-per-address must not be negative"))
	}
	if c.GCHeadroomMiB < 0 || c.GCHeadroomMiB > 1<<20 {
		errs = append(errs, errors.New("gc-headroom-mib must be between 0 and 1048576"))
	}
	// read-timeout=1ns (a unit left out, a typo) started a server that
	// closed every connection before reading a request.
	if c.ReadTimeout < minReadTimeout {
		errs = append(errs, fmt.Errorf("read-timeout must be at least %s", minReadTimeout))
	}
	if c.HeartbeatTimeout <= 0 || c.NotReceivedAfter <= 0 {
		errs = append(errs, errors.New("heartbeat-timeout and not-received-after must be positive"))
	}
	if c.WebhookLease < 20*time.Second {
		errs = append(errs, errors.New("webhook-lease must be at least 20s: longer than an attempt (15 s), or a slow attempt would be made twice"))
	}
	if c.WebhookWorkers < 1 || c.WebhookWorkers > maxWebhookWorkers {
		errs = append(errs, fmt.Errorf("webhook-workers must be between 1 and %d", maxWebhookWorkers))
	}
	if c.WebhookShare < 1 || c.WebhookShare > c.WebhookWorkers {
		errs = append(errs, errors.New("webhook-share must be between 1 and webhook-workers"))
	}
	if c.WebhookMaxPending < 1 {
		errs = append(errs, errors.New("webhook-max-pending must be at least 1"))
	}
	if c.CallRetention < 0 {
		errs = append(errs, errors.New("call-retention must not be negative (0 keeps ended calls forever)"))
	}
	if c.WebhookRetention <= 0 {
		errs = append(errs, errors.New("webhook-retention must be positive"))
	}
	if c.EventRetention < 24*time.Hour {
		// The contract's replay promise; below it a stream resuming after
		// a night away was reset, and one opening missed invitations
		// still pending (they live up to 10 minutes).
		errs = append(errs, errors.New("event-retention must be at least 24h: a client resuming with Last-Event-ID gets at least a day back"))
	}
	if s := strings.ToUpper(c.Synchronous); s != "FULL" && s != "NORMAL" {
		errs = append(errs, fmt.Errorf("synchronous must be FULL or NORMAL, not %q", c.Synchronous))
	}
	if c.JWTSecret != "" && len(c.JWTSecret) < 32 {
		errs = append(errs, errors.New("jwt-secret must be at least 32 bytes"))
	}
	// A failed login is never counted (the limiter keys on who signed
	// in): a short admin token fell to guessing within seconds, and it
	// can register a webhook that receives every user's calls.
	if c.AdminToken != "" && len(c.AdminToken) < 32 {
		errs = append(errs, errors.New("admin-token must be at least 32 bytes (e.g. head -c 24 /dev/urandom | base64)"))
	}
	// A bearer header cannot carry them (the server trims what it is
	// sent): a token read from a file with its newline was accepted, and
	// no request could ever match it.
	if c.AdminToken != "" && (strings.TrimSpace(c.AdminToken) != c.AdminToken || strings.ContainsFunc(c.AdminToken, unicode.IsControl)) {
		errs = append(errs, errors.New("admin-token must not begin or end with white space or hold control characters: no bearer header can carry them (a newline read from a file?)"))
	}
	if !claimPattern.MatchString(c.JWTUserClaim) || registeredClaims[c.JWTUserClaim] {
		errs = append(errs, fmt.Errorf("jwt-user-claim %q must be a claim name of [A-Za-z0-9_.:/@#-] other than iss, aud, exp, nbf, iat, jti and role", c.JWTUserClaim))
	}
	if c.JWKSURL != "" {
		if u, err := url.Parse(c.JWKSURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("jwks-url %s must be an absolute http(s) URL", redact.URL(c.JWKSURL)))
		}
		// A provider's keys sign tokens for every app it serves (every
		// Firebase project shares one key set): without iss or aud pinned,
		// a user of any other app of that provider could sign in here as
		// anyone.
		if c.JWTIssuer == "" && c.JWTAudience == "" {
			errs = append(errs, errors.New("jwks-url needs jwt-issuer or jwt-audience (or both): the provider's keys also sign other apps' tokens"))
		}
	}
	errs = append(errs, c.validateCluster()...)
	return errors.Join(errs...)
}

// libpqKeyword finds a libpq key=value connection string ("host=db
// user=callsig password=..."), which pgx accepts but callsig would take
// for a SQLite file name.
var libpqKeyword = regexp.MustCompile(`(?i)(^|\s)(host|hostaddr|dbname|user|password|port|sslmode|service)\s*=`)

// looksLikeConnString says whether a db setting that is no postgres://
// URL is still meant for a database server rather than a file: another
// scheme (POSTGRES://, pgsql://) or a key=value string.
func looksLikeConnString(db string) bool {
	return strings.Contains(db, "://") || libpqKeyword.MatchString(db)
}

// nodeIDPattern is what a node id may hold: it is a metrics label value and
// a NATS subject token.
var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// validateCluster checks the cluster-mode settings. The errors never repeat
// the DSN, which may hold a password.
func (c Config) validateCluster() []error {
	var errs []error
	pg := IsPostgresDSN(c.DB)
	if c.NATSURL != "" && !pg {
		errs = append(errs, errors.New("nats-url needs a PostgreSQL db (postgres://...): a SQLite file serves one node, which has nobody to wake up"))
	}
	if pg && c.JWTSecret == "" {
		errs = append(errs, errors.New("a PostgreSQL db needs jwt-secret: every node of a cluster must verify the same tokens, and development mode generates a secret per node"))
	}
	if !nodeIDPattern.MatchString(c.NodeID) {
		errs = append(errs, fmt.Errorf("node-id %q must be 1 to 64 of [A-Za-z0-9_-]", c.NodeID))
	}
	if !nodeIDPattern.MatchString(c.NATSPrefix) {
		errs = append(errs, fmt.Errorf("nats-prefix %q must be 1 to 64 of [A-Za-z0-9_-]", c.NATSPrefix))
	}
	if c.PGMaxConns < 2 {
		errs = append(errs, errors.New("pg-max-conns must be at least 2"))
	}
	if c.PGStatementTimeout <= 0 {
		errs = append(errs, errors.New("pg-statement-timeout must be positive"))
	}
	switch {
	case c.PresenceLease != 0:
		// A lease given is checked on SQLite too, which never reads it,
		// as every other cluster setting is: a value that is wrong is
		// refused where it is written, not when the same settings first
		// run a cluster.
		if c.PresenceLease < time.Second || c.PresenceLease > 2*c.HeartbeatTimeout {
			errs = append(errs, fmt.Errorf("presence-lease %v must be at least 1s and at most twice heartbeat-timeout (%v): a dead node's callers must go offline before long", c.PresenceLease, c.HeartbeatTimeout))
		}
	case pg && c.presenceLease() < time.Second:
		errs = append(errs, fmt.Errorf("heartbeat-timeout %v is too short for a PostgreSQL db: a node's presence lease, at least 1s, must be at most twice it", c.HeartbeatTimeout))
	}
	return errs
}

// defaultPresenceLease is the presence lease when none is given and the
// heartbeat timeout is 7.5 s or more.
const defaultPresenceLease = 15 * time.Second

// presenceLease is the lease a cluster node holds: the one given, or
// defaultPresenceLease, or twice the heartbeat timeout when that is
// shorter. A fixed default would be refused with any heartbeat timeout
// below 7.5 s, and stopped a SQLite server, which holds no lease, from
// starting with one.
func (c Config) presenceLease() time.Duration {
	if c.PresenceLease != 0 {
		return c.PresenceLease
	}
	return min(defaultPresenceLease, 2*c.HeartbeatTimeout)
}

// randomNodeID names a node that was given no id: unique per start.
func randomNodeID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "node-" + hex.EncodeToString(b)
}
