package app

import (
	"regexp"
	"strings"
)

// setting is one configuration value: its flag, its CALLSIG_* variable,
// its usage and where it is stored.
type setting struct {
	flag, env, usage string
	p                any
}

// settings lists every setting, stored into c (cors: the raw origins).
func settings(c *Config, cors *string) []setting {
	return []setting{
		{"addr", "CALLSIG_ADDR", "listen address", &c.Addr},
		{"db", "CALLSIG_DB", "SQLite database file, or a postgres:// URL for cluster mode", &c.DB},
		{"jwt-secret", "CALLSIG_JWT_SECRET", "HS256 secret for user tokens (empty: development mode, generated secret)", &c.JWTSecret},
		{"jwt-issuer", "CALLSIG_JWT_ISSUER", "required JWT iss (optional)", &c.JWTIssuer},
		{"jwt-audience", "CALLSIG_JWT_AUDIENCE", "required JWT aud (optional)", &c.JWTAudience},
		{"jwt-user-claim", "CALLSIG_JWT_USER_CLAIM", "JWT claim holding the user ID, in every token", &c.JWTUserClaim},
		{"jwks-url", "CALLSIG_JWKS_URL", "JWKS of the app's identity provider: also accept its RS256/ES256/EdDSA tokens (optional)", &c.JWKSURL},
		{"admin-token", "CALLSIG_ADMIN_TOKEN", "bearer token for admin endpoints", &c.AdminToken},
		{"heartbeat-timeout", "CALLSIG_HEARTBEAT_TIMEOUT", "caller-offline grace period", &c.HeartbeatTimeout},
		{"not-received-after", "CALLSIG_NOT_RECEIVED_AFTER", "delay before an undelivered invitee becomes notYetReceived", &c.NotReceivedAfter},
		{"max-call-users", "CALLSIG_MAX_CALL_USERS", "users ever in one call, caller included", &c.MaxCallUsers},
		{"max-started-calls-per-user", "CALLSIG_MAX_STARTED_CALLS_PER_USER", "started calls a user may be in (accepted, the caller included) and still start a call, general or advanced; 0: no bound", &c.MaxStartedCalls},
		{"webhook-allow-private", "CALLSIG_WEBHOOK_ALLOW_PRIVATE", "allow webhooks to loopback/private addresses", &c.WebhookAllowPrivate},
		{"webhook-url", "CALLSIG_WEBHOOK_URL", "a webhook endpoint configured without the API", &c.WebhookURL},
		{"webhook-secret", "CALLSIG_WEBHOOK_SECRET", "its signing secret (whsec_...)", &c.WebhookSecret},
		{"webhook-retention", "CALLSIG_WEBHOOK_RETENTION", "how long finished webhook deliveries stay in the delivery log (a pending one overdue by half of it, at least 48h, is failed as expired)", &c.WebhookRetention},
		{"webhook-lease", "CALLSIG_WEBHOOK_LEASE", "how long a webhook attempt stays claimed by the node making it; a dead node's attempts are retried by another after it", &c.WebhookLease},
		{"webhook-workers", "CALLSIG_WEBHOOK_WORKERS", "webhook attempts in flight at most, over all endpoints (a goroutine and an outgoing connection each)", &c.WebhookWorkers},
		{"webhook-share", "CALLSIG_WEBHOOK_SHARE", "webhook attempts in flight to any one endpoint at most: one endpoint's rate is at most this over its answer time", &c.WebhookShare},
		{"webhook-max-pending", "CALLSIG_WEBHOOK_MAX_PENDING", "pending webhook deliveries one endpoint may have: beyond it (a receiver long down) the oldest are failed as dropped", &c.WebhookMaxPending},
		{"cors-origins", "CALLSIG_CORS_ORIGINS", "comma-separated origins allowed for browser apps", cors},
		{"synchronous", "CALLSIG_SYNCHRONOUS", "SQLite synchronous: FULL (durable) or NORMAL", &c.Synchronous},
		{"event-retention", "CALLSIG_EVENT_RETENTION", "how long the event log keeps events for replay", &c.EventRetention},
		{"call-retention", "CALLSIG_CALL_RETENTION", "how long ended calls stay listed (GET /calls) after they ended; 0 keeps them forever", &c.CallRetention},
		{"rate-limit", "CALLSIG_RATE_LIMIT", "requests per second per user (0: off)", &c.RateLimit},
		{"rate-burst", "CALLSIG_RATE_BURST", "burst of the per-user rate limit (0: the rate, rounded up)", &c.RateBurst},
		{"shutdown-timeout", "CALLSIG_SHUTDOWN_TIMEOUT", "how long the whole shutdown may take (requests in flight, background work, database close)", &c.ShutdownTimeout},
		{"read-timeout", "CALLSIG_READ_TIMEOUT", "how long a request may take to arrive, its headers at most 10s of it; slower is 408", &c.ReadTimeout},
		{"max-streams-per-user", "CALLSIG_MAX_STREAMS_PER_USER", "open event streams per user; a newer one closes the oldest", &c.MaxStreamsPerUser},
		{"max-connections", "CALLSIG_MAX_CONNECTIONS", "connections served at once (0: the open-file limit less headroom)", &c.MaxConnections},
		{"max-connections-per-address", "CALLSIG_MAX_CONNECTIONS_PER_ADDRESS", "connections one client address may hold (0: a sixteenth of max-connections, at least 256; max-connections or more: no cap); loopback and private addresses are exempt", &c.MaxConnsPerAddress},
		{"log-level", "CALLSIG_LOG_LEVEL", "debug, info, warn or error", &c.LogLevel},
		{"log-format", "CALLSIG_LOG_FORMAT", "text or json", &c.LogFormat},
		{"gc-headroom-mib", "CALLSIG_GC_HEADROOM_MIB", "heap growth in MiB the garbage collector allows between collections at least (0: GOGC alone; ignored when GOGC is set)", &c.GCHeadroomMiB},
		{"nats-url", "CALLSIG_NATS_URL", "NATS URL for wake-ups between cluster nodes (needs a postgres:// db)", &c.NATSURL},
		{"nats-prefix", "CALLSIG_NATS_PREFIX", "NATS subject prefix (clusters sharing one NATS server need different ones)", &c.NATSPrefix},
		{"node-id", "CALLSIG_NODE_ID", "this node's id in logs, metrics and /readyz (default: random per start)", &c.NodeID},
		{"pg-max-conns", "CALLSIG_PG_MAX_CONNS", "PostgreSQL connection pool size", &c.PGMaxConns},
		{"pg-statement-timeout", "CALLSIG_PG_STATEMENT_TIMEOUT", "bound on each PostgreSQL statement", &c.PGStatementTimeout},
		{"presence-lease", "CALLSIG_PRESENCE_LEASE", "how long the streams of a node that stopped renewing still count as online, at least 1s and at most twice heartbeat-timeout (0: 15s, or twice heartbeat-timeout if shorter)", &c.PresenceLease},
	}
}

// UnknownEnv returns the names of the CALLSIG_* variables in environ
// (os.Environ's form, NAME=value) that are no setting: a typo
// (CALLSIG_HEARTBEAT_TIMOUT) is otherwise ignored without a word and the
// server starts with the default.
func UnknownEnv(environ []string) []string {
	known := map[string]bool{}
	for _, v := range settings(&Config{}, new(string)) {
		known[v.env] = true
	}
	var out []string
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "CALLSIG_") && !known[name] && !notSettings[name] && !serviceLink(name, value) {
			out = append(out, name)
		}
	}
	return out
}

// serviceLink says whether name=value is one of the variables Kubernetes
// gives every container for each service of its namespace (enableServiceLinks,
// on by default): a service named callsig, or callsig-nats, gives
// CALLSIG_SERVICE_HOST, CALLSIG_NATS_PORT=tcp://10.0.0.7:4222 and so on,
// which name no setting and are no typo. X_PORT counts only with such a
// tcp:// (udp://, sctp://) value: CALLSIG_PORT=9000 is an operator's
// guess at a setting (CALLSIG_ADDR), worth the warning.
func serviceLink(name, value string) bool {
	if k8sServiceVar.MatchString(name) {
		return true
	}
	return strings.HasSuffix(name, "_PORT") && k8sPortValue.MatchString(value)
}

var (
	k8sServiceVar = regexp.MustCompile(`^[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)$`)
	k8sPortValue  = regexp.MustCompile(`^(tcp|udp|sctp)://[^/]+:[0-9]+$`)
)

// notSettings are CALLSIG_* variables the tests and scripts read, never
// the server: set beside it, they are no typo.
var notSettings = map[string]bool{
	"CALLSIG_BIN": true, "CALLSIG_CONTROL_URL": true, "CALLSIG_LIMITED_URL": true, "CALLSIG_SKIP_BROWSER": true,
	"CALLSIG_TEST_LOG": true, "CALLSIG_TEST_MAIN_ARGS": true, "CALLSIG_TEST_TYPECHECK": true, "CALLSIG_UPDATE_DOCS": true, "CALLSIG_URL": true,
}

// SecretWarning says what is likely wrong with a JWT secret that is
// accepted (empty: nothing): white space at either end, a newline kept
// from a file, which is part of the HS256 key, so tokens another service
// signs with the secret as it meant it are refused. Not refused, as a
// short admin token is: a service reading the same file signs with the
// same bytes, and such a deployment works.
func (c Config) SecretWarning() string {
	if c.JWTSecret != "" && c.JWTSecret != strings.TrimSpace(c.JWTSecret) {
		return "jwt-secret begins or ends with white space (a newline kept from a file?): it is part of the key, and tokens signed without it are refused"
	}
	return ""
}
