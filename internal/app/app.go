// Package app wires callsig together: the store, the call service, event
// delivery and the HTTP routes, in one readable place shared by cmd/api and
// the end-to-end tests (which start exactly what production starts).
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"callsig/calls"
	"callsig/cluster"
	"callsig/db"
	"callsig/db/postgres"
	"callsig/handlers"
	"callsig/sse"
	"callsig/web"
	"callsig/webhooks"
)

// App is a running callsig: everything but the listener.
type App struct {
	Config   Config
	Secret   []byte // the JWT secret in use
	DevMode  bool   // true when the secret was generated for development
	Store    db.Store
	Service  *calls.Service
	Handler  http.Handler
	Registry *prometheus.Registry

	log      *slog.Logger
	maxConns int                 // the connection cap (see Listener)
	conns    *handlers.ConnLimit // applies it
	answers  handlers.Answers    // the answers in progress (see CutAnswersAt)
	hub      *sse.Hub
	webhooks *webhooks.Registry
	fanout   *fanout // nil without NATS
	parts    []part  // the background parts Run runs
	// Presence is the cluster-wide presence (PostgreSQL); nil with SQLite,
	// whose presence is the hub's alone.
	Presence      *cluster.Presence
	presenceStore *postgres.Presence
}

// part is one background part: it works until ctx is done and returns nil
// then, or returns early with the error that stopped it.
type part struct {
	name string
	run  func(ctx context.Context) error
}

// Options are the parts tests replace.
type Options struct {
	Clock  calls.Clock  // default: the system clock
	Logger *slog.Logger // default: slog.Default()
	// EventCatchUp is the hub's periodic catch-up with PostgreSQL
	// (sse.Options.CatchUpEvery, default 1s); a test of NATS wake-ups
	// lengthens it so only they can deliver in time.
	EventCatchUp time.Duration
	// StreamHeartbeat is the event streams' heartbeat interval
	// (sse.Options.Heartbeat, default 15 s): the JavaScript client's tests
	// of silent streams shorten it below their heartbeatTimeout, so that a
	// quiet, healthy stream is told from a silent one.
	StreamHeartbeat time.Duration
}

// New opens the store and builds the service, event delivery and the
// routes; nothing runs yet. The caller runs the background parts with Run,
// serves Handler, and once Run has returned releases the store with Close.
func New(ctx context.Context, cfg Config, opts Options) (*App, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.Clock == nil {
		opts.Clock = calls.SystemClock{}
	}
	if cfg.NodeID == "" {
		cfg.NodeID = randomNodeID()
	}
	// Checked here too for a Config built by hand (tests): a PostgreSQL
	// DSN must never be taken for the place of a development secret.
	if err := errors.Join(cfg.validateCluster()...); err != nil {
		return nil, err
	}
	log = log.With("node", cfg.NodeID)
	a := &App{Config: cfg, log: log}
	a.maxConns = maxConnections(cfg.MaxConnections, log)

	var secretPath string
	var err error
	if a.Secret, a.DevMode, secretPath, err = ResolveSecret(cfg); err != nil {
		return nil, err
	}
	if a.DevMode {
		log.Warn("DEVELOPMENT MODE: no CALLSIG_JWT_SECRET configured; using a generated secret and minting tokens for anyone at POST /dev/token. Do not expose this server.", "secret_file", secretPath, "addr", a.ListenAddr())
	}

	if a.Store, err = openStore(ctx, cfg, log); err != nil {
		return nil, err
	}

	a.Registry = prometheus.NewRegistry()
	a.Registry.MustRegister(collectors.NewGoCollector(), newSchedCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), newCallsCollector(a.Store), newNodeInfo(cfg.NodeID, a.Backend()))
	if w, ok := a.Store.(writerStatser); ok {
		a.Registry.MustRegister(newWriterCollector(w))
	}
	registerPools(a.Registry, a.Store)
	a.conns = handlers.NewConnLimit(a.maxConns, connReserve)
	a.conns.SetPerAddress(perAddressCap(cfg.MaxConnsPerAddress, a.maxConns))
	if err := a.conns.Register(a.Registry); err != nil {
		a.Store.Close()
		return nil, err
	}

	fwd := &hubService{}
	var hubSvc sse.Service = fwd
	if IsPostgresDSN(cfg.DB) {
		if err := a.newClusterPresence(ctx, fwd, opts.Clock); err != nil {
			a.Close()
			return nil, err
		}
		hubSvc = a.Presence
	}
	if a.hub, err = a.newEvents(ctx, opts, hubSvc); err != nil {
		a.Close()
		return nil, err
	}
	var presence calls.Presence = a.hub
	var deadlinePoll time.Duration
	if a.Presence != nil {
		a.Presence.SetLocal(a.hub)
		presence = a.Presence
		// Another node may create a deadline and die before firing it.
		deadlinePoll = clusterDeadlinePoll
	}
	hooks, err := a.newWebhooks(opts)
	if err != nil {
		a.Close()
		return nil, err
	}
	a.webhooks = hooks.registry
	if a.fanout, err = a.newFanout(a.hub); err != nil {
		a.Close()
		return nil, err
	}

	// The hub gets the events from the store itself where the store can
	// hand them over as they become durable (SQLite's syncer); otherwise
	// from the service, after each commit.
	notify := notifiers{hooks.dispatcher}
	if feed, ok := a.Store.(durableFeed); ok {
		hub := a.hub
		feed.OnDurable(func(evs []calls.Event) { hub.Committed(evs, 0) })
	} else {
		notify = append(notifiers{a.hub}, notify...)
	}
	a.Service = calls.NewService(calls.Options{
		Store:    a.Store,
		Clock:    opts.Clock,
		Notifier: append(notify, a.fanout.notifiers()...),
		Presence: presence,
		Logger:   log,
		Config: calls.Config{MaxCallUsers: cfg.MaxCallUsers, MaxStartedCalls: cfg.MaxStartedCalls, NotReceivedAfter: cfg.NotReceivedAfter, HeartbeatTimeout: cfg.HeartbeatTimeout,
			DeadlinePoll: deadlinePoll, SharedPresence: a.Presence != nil},
	})
	fwd.Service = a.Service
	a.parts = []part{
		{"deadline scheduler", a.Service.Run},
		{"event hub", a.hub.Run},
		{"webhook dispatcher", hooks.dispatcher.Run},
		{"webhook retention", hooks.retention.Run},
		{"idempotency pruner", (&db.Pruner{What: "idempotency keys", Prune: a.Store.PruneIdempotency, Log: log}).Run},
	}
	if cfg.CallRetention > 0 {
		// The calls' end times come from the app's clock (a fake one in
		// tests), so the cut-off does too.
		a.parts = append(a.parts, part{"call retention", (&db.Pruner{What: "ended calls", Prune: a.Store.PruneCalls,
			Age: cfg.CallRetention, Now: opts.Clock.Now, Log: log}).Run})
	}
	if a.Presence != nil {
		a.parts = append(a.parts, part{"cluster presence", a.Presence.Run})
	}
	a.parts = append(a.parts, a.fanout.parts()...)

	auth := handlers.AuthConfig{Secret: a.Secret, Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience, AdminToken: cfg.AdminToken, UserClaim: cfg.JWTUserClaim}
	if cfg.JWKSURL != "" {
		// Nothing is fetched before Run: a provider that is down or slow
		// never delays or fails startup (see handlers.JWKS).
		if auth.JWKS, err = handlers.NewJWKS(handlers.JWKSOptions{URL: cfg.JWKSURL, Logger: log}); err != nil {
			a.Close()
			return nil, err
		}
		a.parts = append(a.parts, part{"identity provider keys", auth.JWKS.Run})
	}

	a.Handler, err = handlers.New(handlers.Deps{
		Service:     a.Service,
		Auth:        auth,
		Idempotency: a.Store,
		Ready:       a.Store.Ping,
		Node:        cfg.NodeID,
		Backend:     a.Backend(),
		Logger:      log,
		Registry:    a.Registry,
		CORSOrigins: cfg.CORSOrigins,
		RateLimit:   cfg.RateLimit,
		RateBurst:   cfg.RateBurst,
		Events:      a.hub,
		Webhooks:    hooks.registry,
		DevToken:    a.devToken(),
		Demo:        web.Handler(),
		SDK:         web.SDKHandler(),
		Answers:     &a.answers,
	})
	if err != nil {
		a.Close()
		return nil, err
	}
	// Last, so no failure above leaves a connection behind.
	if err := a.fanout.connect(); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// Run runs the background parts (deadline scheduler, event hub, webhook
// dispatcher and retention, idempotency pruner, and the identity
// provider's key set when configured) until ctx is done, then
// waits for all of them to stop. If one fails, the others are stopped too
// and Run returns that failure: a server missing one of its parts (its
// deadlines not firing, say) must not go on answering as if whole.
func (a *App) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, p := range a.parts {
		g.Go(func() error {
			if err := p.run(ctx); err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// Close closes the database. Call it after Run has returned (and the HTTP
// server has finished its requests): the parts write until they stop.
func (a *App) Close() error {
	a.fanout.close()
	var err error
	if a.presenceStore != nil {
		err = a.presenceStore.Close()
	}
	return errors.Join(a.Store.Close(), err)
}

// Backend names the storage backend: "postgres" or "sqlite".
func (a *App) Backend() string {
	if IsPostgresDSN(a.Config.DB) {
		return "postgres"
	}
	return "sqlite"
}

// NewLogger returns the process logger for a level and format.
func NewLogger(level, format string, w interface{ Write([]byte) (int, error) }) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	o := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, o)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, o)), nil
	}
	return nil, errors.New("log format must be text or json")
}

// ListenAddr is the address to listen on: the configured one, except in
// development mode (no secret: POST /dev/token mints tokens for anyone)
// without an explicit address, where only this machine may connect: the
// configured port on 127.0.0.1.
func (a *App) ListenAddr() string {
	if !a.DevMode || a.Config.AddrSet {
		return a.Config.Addr
	}
	_, port, err := net.SplitHostPort(a.Config.Addr)
	if err != nil {
		port = "8080"
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// maxHeaderBytes bounds a request's header block; past it net/http
// answers 431.
const maxHeaderBytes = 64 << 10

// Server returns the HTTP server for the app. No WriteTimeout: event
// streams are long-lived and set per-write deadlines themselves.
func (a *App) Server() *http.Server {
	return &http.Server{
		Addr:              a.ListenAddr(),
		Handler:           a.Handler,
		ReadHeaderTimeout: min(10*time.Second, a.Config.ReadTimeout),
		// A request's headers are well under 16 KiB, a token included
		// (handlers refuses longer ones); Go's default of 1 MiB let a
		// forged header cost the server far more than its sender.
		MaxHeaderBytes: maxHeaderBytes,
		ReadTimeout:    a.Config.ReadTimeout,
		IdleTimeout:    120 * time.Second,
		ConnContext:    handlers.ConnContext,
		ConnState:      a.answers.ConnState,
		ErrorLog:       slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
}

// BeginShutdown ends open event streams so their clients reconnect
// elsewhere while the HTTP server drains the other requests, and has a
// DELETE /webhooks/{id} answer without waiting for the attempts in flight
// to the endpoint: the dispatcher running them stops only once the
// requests are done, so such a wait held the drain to its deadline.
func (a *App) BeginShutdown() {
	a.hub.Shutdown()
	if a.webhooks != nil {
		a.webhooks.BeginShutdown()
	}
}

// CutAnswersAt brings the write deadline of every answer in progress (and
// of any begun later) forward to at, if later: a shutdown's, so that one
// whose client does not read it ends before the shutdown's own deadline
// rather than hold the shutdown to it.
func (a *App) CutAnswersAt(at time.Time) { a.answers.CutAt(at) }

// devToken mints user tokens for POST /dev/token, only in development mode
// (the generated secret): with a configured secret it answers 404, so a
// production server never hands out tokens.
// Tokens use the wall clock, as their verification does.
func (a *App) devToken() func(string, time.Duration) (string, time.Time, bool) {
	return func(userID string, ttl time.Duration) (string, time.Time, bool) {
		if !a.DevMode {
			return "", time.Time{}, false
		}
		now := time.Now()
		tok, err := handlers.MintToken(a.Secret, handlers.TokenRequest{UserID: userID, TTL: ttl, Issuer: a.Config.JWTIssuer, Audience: a.Config.JWTAudience, UserClaim: a.Config.JWTUserClaim}, now)
		if err != nil {
			a.log.Error("mint development token", "err", err)
			return "", time.Time{}, false
		}
		return tok, now.Add(ttl), true
	}
}
