package testkit

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"callsig/handlers"
	"callsig/internal/app"
	"callsig/internal/fakeclock"
	"callsig/internal/pgtest"
)

// Epoch is where fake clocks start: a fixed, readable instant.
var Epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// Server is a running callsig for one test.
type Server struct {
	T      testing.TB
	Dir    string
	Config app.Config
	Clock  *fakeclock.Clock // nil when the server runs on the real clock
	App    *app.App
	URL    string

	http *httptest.Server
	addr string
	logs io.Writer // nil: the test log
	// catchUp is app.Options.EventCatchUp (0: the default).
	catchUp time.Duration
	spec    *specValidator
	// stopParts stops the app's background parts; ran answers when they
	// have (see app.App.Run).
	stopParts context.CancelFunc
	ran       chan error
	mu        sync.Mutex
}

// Option adjusts a test server before it starts.
type Option func(*settings)

type settings struct {
	cfg       app.Config
	fakeClock bool
	clockAt   time.Time // where the fake clock starts; zero: Epoch
	logs      io.Writer
	postgres  bool
	catchUp   time.Duration
}

// WithFakeClock runs the server on a manual clock (s.Clock.Advance).
func WithFakeClock() Option { return func(s *settings) { s.fakeClock = true } }

// WithLogs sends the server's log, from level info, to w as JSON lines
// (for tests of what it logs) instead of the test log.
func WithLogs(w io.Writer) Option { return func(s *settings) { s.logs = w } }

// WithConfig edits the configuration.
func WithConfig(f func(*app.Config)) Option { return func(s *settings) { f(&s.cfg) } }

// WithPostgres runs the server on its own fresh PostgreSQL database
// (pgtest.NewDatabase), dropped when the test ends.
func WithPostgres() Option {
	return func(s *settings) { s.postgres = true }
}

// WithEventCatchUp sets the hub's periodic catch-up with PostgreSQL
// (app.Options.EventCatchUp): a test proving NATS wake-ups lengthens it.
func WithEventCatchUp(d time.Duration) Option { return func(s *settings) { s.catchUp = d } }

// AdminToken is the admin bearer token test servers are configured with.
const AdminToken = "test-admin-token-0123456789abcdef"

// Start starts a server on 127.0.0.1 with a fresh database in t.TempDir and
// stops it when the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	dir := t.TempDir()
	st := settings{cfg: app.Defaults()}
	st.cfg.DB = filepath.Join(dir, "callsig.db")
	st.cfg.JWTSecret = "test-secret-0123456789abcdef0123456789"
	st.cfg.AdminToken = AdminToken
	st.cfg.RateLimit = 0
	st.cfg.WebhookAllowPrivate = true
	for _, o := range opts {
		o(&st)
	}
	if st.postgres {
		st.cfg.DB = pgtest.NewDatabase(t)
	}
	s := &Server{T: t, Dir: dir, Config: st.cfg, spec: loadSpec(t), logs: st.logs, catchUp: st.catchUp}
	if st.fakeClock {
		at := Epoch
		if !st.clockAt.IsZero() {
			at = st.clockAt
		}
		s.Clock = fakeclock.New(at)
	}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() {
	t := s.T
	t.Helper()
	opts := app.Options{Logger: testLogger(t), EventCatchUp: s.catchUp}
	if s.logs != nil {
		opts.Logger = slog.New(slog.NewJSONHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if s.Clock != nil {
		opts.Clock = s.Clock
	}
	a, err := app.New(context.Background(), s.Config, opts)
	if err != nil {
		t.Fatalf("start callsig: %v", err)
	}
	addr := s.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := listen(addr)
	if err != nil {
		a.Close()
		t.Fatalf("listen %s: %v", addr, err)
	}
	hs := httptest.NewUnstartedServer(a.Handler)
	hs.Listener.Close()
	hs.Listener = a.Listener(ln)
	hs.Config = a.Server()
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	hs.Start()
	s.mu.Lock()
	s.App, s.http, s.addr, s.URL = a, hs, ln.Addr().String(), hs.URL
	s.stopParts, s.ran = stop, ran
	s.mu.Unlock()
}

// listen binds addr, retrying briefly: after a restart the old socket may
// need a moment to be released.
func listen(addr string) (net.Listener, error) {
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}

// Stop shuts the server down as SIGTERM would. Safe to call twice.
func (s *Server) Stop() {
	s.mu.Lock()
	a, hs, stopParts, ran := s.App, s.http, s.stopParts, s.ran
	s.App, s.http = nil, nil
	s.mu.Unlock()
	if a == nil {
		return
	}
	a.BeginShutdown()
	hs.Config.SetKeepAlivesEnabled(false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Config.Shutdown(ctx); err != nil {
		s.T.Errorf("shutdown: %v", err)
	}
	hs.Close()
	stopParts()
	if err := <-ran; err != nil {
		s.T.Errorf("background parts: %v", err)
	}
	if err := a.Close(); err != nil {
		s.T.Errorf("close app: %v", err)
	}
}

// Restart stops the server and starts it again on the same database file,
// address and clock, as an operator restarting the process would.
func (s *Server) Restart() {
	s.T.Helper()
	s.Stop()
	s.start()
}

// testLogger sends server logs to the test log, shown only on failure.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("CALLSIG_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if _, fuzz := t.(*testing.F); fuzz {
		return slog.New(slog.DiscardHandler) // f.Log panics inside a fuzz target
	}
	w := &tWriter{t: t}
	// Registered first, so it runs last: after the server has stopped,
	// a straggling goroutine must not log through a finished test.
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// tWriter sends logs to the test log, shown only on failure, until the
// test is over.
type tWriter struct {
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(string(p))
	}
	return len(p), nil
}

func (w *tWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// Token mints a one-hour user token.
func (s *Server) Token(user string) string { return s.TokenFor(user, time.Hour) }

// TokenFor mints a user token that expires ttl from now (wall time: JWTs
// are checked on it; a stream then counts its token's time down on the
// server's clock, fake or not).
func (s *Server) TokenFor(user string, ttl time.Duration) string {
	s.T.Helper()
	tok, err := handlers.MintToken(s.App.Secret, handlers.TokenRequest{UserID: user, TTL: ttl, Issuer: s.Config.JWTIssuer, Audience: s.Config.JWTAudience, UserClaim: s.Config.JWTUserClaim}, time.Now())
	if err != nil {
		s.T.Fatalf("mint token: %v", err)
	}
	return tok
}

// Advance moves the fake clock.
func (s *Server) Advance(d time.Duration) {
	s.T.Helper()
	if s.Clock == nil {
		s.T.Fatal("Advance needs WithFakeClock")
	}
	s.Clock.Advance(d)
}

// Now returns the server's current time in Unix ms.
func (s *Server) Now() int64 {
	if s.Clock != nil {
		return s.Clock.Now().UnixMilli()
	}
	return time.Now().UnixMilli()
}
