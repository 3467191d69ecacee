package testkit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"callsig/handlers"
	"callsig/internal/app"
	"callsig/internal/fakeclock"
)

// Epoch is where fake clocks start: a fixed, readable instant.
var Epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// Server is a running callsig for one test: one node, or with
// WithBackend(Cluster) several nodes on one PostgreSQL database and NATS,
// behind a round-robin balancer at URL, so consecutive requests and
// streams land on different nodes.
type Server struct {
	T       testing.TB
	Dir     string
	Config  app.Config
	Backend Backend
	Clock   *fakeclock.Clock // nil when the server runs on the real clock
	App     *app.App         // the first node's
	URL     string
	// Clocks are the nodes' own clocks over Clock with WithClockOffsets
	// (nil otherwise): node i's reads Clock plus its offset.
	Clocks []*fakeclock.Skewed

	nodes []*node
	lb    *balancer // nil with one node
	logs  io.Writer // nil: the test log
	spec  *specValidator
	mu    sync.Mutex
	// heartbeat is app.Options.StreamHeartbeat (0: the default).
	heartbeat time.Duration
	// catchUp is app.Options.EventCatchUp (0: the default).
	catchUp time.Duration
	// BeforeRun, when set, runs at each node's start between building the
	// app and starting its background parts: a story can make the store
	// unreachable just as the parts start (see TCPProxy.Cut).
	BeforeRun func()
}

// node is one running app of a Server.
type node struct {
	cfg  app.Config
	app  *app.App
	http *httptest.Server
	addr string
	url  string
	// stopParts stops the app's background parts; ran answers when they
	// have (see app.App.Run).
	stopParts context.CancelFunc
	ran       chan error
	// unhold releases the port a stopped node holds until it listens again
	// (see holdPort); nil when it holds none.
	unhold func()
}

// Option adjusts a test server before it starts.
type Option func(*settings)

type settings struct {
	cfg       app.Config
	fakeClock bool
	clockAt   time.Time // where the fake clock starts; zero: Epoch
	offsets   []time.Duration
	logs      io.Writer
	backend   Backend
	catchUp   time.Duration
	heartbeat time.Duration
	// Cluster settings (see WithNATS, WithDSN).
	natsURL    string
	rewriteDSN func(string) string
}

// WithFakeClock runs the server on a manual clock (s.Clock.Advance).
func WithFakeClock() Option { return func(s *settings) { s.fakeClock = true } }

// WithClockOffsets runs the server on a manual clock and node i on its own
// clock (Server.Clocks), the manual one plus offsets[i] (minus, when
// negative; 0 past the list): the nodes of a cluster whose clocks
// disagree. Timers run on the manual clock; Server.StepClock steps a
// node's clock without them, as NTP steps a wall clock.
func WithClockOffsets(offsets ...time.Duration) Option {
	return func(s *settings) { s.fakeClock, s.offsets = true, append([]time.Duration{}, offsets...) }
}

// WithLogs sends the server's log, from level info, to w as JSON lines
// (for tests of what it logs) instead of the test log.
func WithLogs(w io.Writer) Option { return func(s *settings) { s.logs = w } }

// WithConfig edits the configuration (of every node).
func WithConfig(f func(*app.Config)) Option { return func(s *settings) { f(&s.cfg) } }

// WithPostgres runs the server on its own fresh PostgreSQL database
// (see newDatabase), dropped when the test ends.
func WithPostgres() Option { return WithBackend(Postgres) }

// WithEventCatchUp sets the hub's periodic catch-up with PostgreSQL
// (app.Options.EventCatchUp): a test proving NATS wake-ups lengthens it.
func WithEventCatchUp(d time.Duration) Option { return func(s *settings) { s.catchUp = d } }

// WithStreamHeartbeat sets the event streams' heartbeat interval
// (app.Options.StreamHeartbeat): a test of the client's silence detection
// makes it shorter than the client's heartbeatTimeout.
func WithStreamHeartbeat(d time.Duration) Option { return func(s *settings) { s.heartbeat = d } }

// AdminToken is the admin bearer token test servers are configured with.
const AdminToken = "test-admin-token-0123456789abcdef"

// Start starts a server on 127.0.0.1 with a fresh database (a SQLite file
// in t.TempDir unless WithBackend says otherwise) and stops it when the
// test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	dir := t.TempDir()
	st := settings{cfg: app.Defaults()}
	st.cfg.DB = filepath.Join(dir, "callsig.db")
	st.cfg.JWTSecret = "test-secret-0123456789abcdef0123456789"
	st.cfg.AdminToken = AdminToken
	st.cfg.RateLimit = 0
	st.cfg.WebhookAllowPrivate = true
	// Tests share the machine's PostgreSQL (max_connections 100) with the
	// other packages' tests running at once: a 3-node cluster at the
	// default pool (16, and 4 for presence, a node) held 60 connections,
	// and parallel cluster tests ran it out ("too many clients", a 503 in
	// CI). At 8 a node (4 of them opened at the start) e2e alone held 56
	// at its peak, and beside chaos's cluster and db/postgres ran it out
	// again once its nodes opened together; 4 a node (2 opened at the
	// start) is what the stories use.
	st.cfg.PGMaxConns = 4
	for _, o := range opts {
		o(&st)
	}
	s := &Server{T: t, Dir: dir, Backend: st.backend, spec: loadSpec(t), logs: st.logs, catchUp: st.catchUp, heartbeat: st.heartbeat}
	s.Config = st.configure(t)
	if st.fakeClock {
		at := Epoch
		if !st.clockAt.IsZero() {
			at = st.clockAt
		}
		s.Clock = fakeclock.New(at)
	}
	for i := range st.backend.nodes() {
		s.nodes = append(s.nodes, &node{})
		if st.offsets != nil {
			var off time.Duration
			if i < len(st.offsets) {
				off = st.offsets[i]
			}
			s.Clocks = append(s.Clocks, fakeclock.NewSkewed(s.Clock, off))
		}
	}
	// Before start: a node that fails to serve ends the test, and those
	// already serving are stopped.
	t.Cleanup(s.Stop)
	s.start()
	return s
}

func (s *Server) start() {
	t := s.T
	t.Helper()
	for i, n := range s.nodes {
		// From s.Config at each start: a test may change it and restart.
		n.cfg = s.Config
		if len(s.nodes) > 1 || n.cfg.NodeID == "" {
			n.cfg.NodeID = fmt.Sprintf("node-%c", 'a'+i)
		}
	}
	// The nodes open together, as a cluster's would: opening is mostly
	// waiting on PostgreSQL (sessions, the migrations' lock), a few
	// hundred milliseconds a node that a story paid three times over.
	apps := make([]*app.App, len(s.nodes))
	errs := make([]error, len(s.nodes))
	var wg sync.WaitGroup
	for i, n := range s.nodes {
		wg.Go(func() { apps[i], errs[i] = s.newApp(n) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, a := range apps {
			if a != nil {
				a.Close()
			}
		}
		t.Fatalf("start callsig: %v", err)
	}
	served := 0
	defer func() { // serve failed (t.Fatalf): the apps not serving yet are closed
		for _, a := range apps[min(served+1, len(apps)):] {
			a.Close()
		}
	}()
	for i, n := range s.nodes {
		s.serve(n, apps[i]) // closes apps[i] itself if it fails
		served = i + 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.App = s.nodes[0].app
	if len(s.nodes) == 1 {
		s.URL = s.nodes[0].url
		return
	}
	if s.lb == nil {
		urls := make([]string, len(s.nodes))
		for i, n := range s.nodes {
			urls[i] = n.url
		}
		s.lb = startBalancer(t, urls)
	}
	s.URL = s.lb.url
}

func (s *Server) startNode(n *node) {
	s.T.Helper()
	a, err := s.newApp(n)
	if err != nil {
		s.T.Fatalf("start callsig: %v", err)
	}
	s.serve(n, a)
}

// newApp opens node n's app; safe to call for several nodes at once.
func (s *Server) newApp(n *node) (*app.App, error) {
	opts := app.Options{Logger: testLogger(s.T), EventCatchUp: s.catchUp, StreamHeartbeat: s.heartbeat}
	if s.Clocks != nil {
		opts.Clock = s.Clocks[slices.Index(s.nodes, n)]
	} else if s.Clock != nil {
		opts.Clock = s.Clock
	}
	if s.logs != nil {
		opts.Logger = slog.New(slog.NewJSONHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return app.New(context.Background(), n.cfg, opts)
}

// serve serves a, node n's freshly opened app, on the node's address.
func (s *Server) serve(n *node, a *app.App) {
	t := s.T
	t.Helper()
	addr := n.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := listen(addr)
	s.mu.Lock()
	if n.unhold != nil {
		n.unhold()
		n.unhold = nil
	}
	s.mu.Unlock()
	if err != nil {
		a.Close()
		t.Fatalf("listen %s: %v", addr, err)
	}
	hs := httptest.NewUnstartedServer(a.Handler)
	hs.Listener.Close()
	hs.Listener = a.Listener(ln)
	hs.Config = a.Server()
	if s.BeforeRun != nil {
		s.BeforeRun()
	}
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	hs.Start()
	s.mu.Lock()
	n.app, n.http, n.addr, n.url = a, hs, ln.Addr().String(), hs.URL
	n.stopParts, n.ran = stop, ran
	s.mu.Unlock()
}

// listen binds addr, retrying briefly: after a restart the old socket may
// need a moment to be released.
func listen(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: reusePort}
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = lc.Listen(context.Background(), "tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}

// Stop shuts the server (every node) down as SIGTERM would, and gives up
// the ports of nodes stopped to be started again. Safe to call twice.
func (s *Server) Stop() {
	for _, n := range s.nodes {
		s.stopNode(n, false)
		s.mu.Lock()
		if n.unhold != nil {
			n.unhold()
			n.unhold = nil
		}
		s.mu.Unlock()
	}
}

// stopNode shuts one node down as SIGTERM would; a stopped node is left
// alone. With hold, the node's port is held until it listens again:
// otherwise a test running meanwhile could get it (a listener on port 0,
// an outgoing connection), and the node could not come back on its
// address.
func (s *Server) stopNode(n *node, hold bool) {
	s.mu.Lock()
	a, hs, stopParts, ran := n.app, n.http, n.stopParts, n.ran
	n.app, n.http = nil, nil
	s.mu.Unlock()
	if a == nil {
		return
	}
	if hold {
		unhold, err := holdPort(n.addr)
		if err != nil {
			s.T.Logf("testkit: node %s restarts without its port held: %v", n.addr, err)
		}
		s.mu.Lock()
		n.unhold = unhold
		s.mu.Unlock()
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

// Restart stops the server and starts it again on the same database,
// addresses and clock, as an operator restarting the process would.
func (s *Server) Restart() {
	s.T.Helper()
	for _, n := range s.nodes {
		s.stopNode(n, true)
	}
	s.start()
}

// Nodes returns the URL of each node (one without a cluster), for stories
// that choose which node serves what.
func (s *Server) Nodes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	urls := make([]string, len(s.nodes))
	for i, n := range s.nodes {
		urls[i] = n.url
	}
	return urls
}

// NodeApp returns node i's app (nil while it is stopped).
func (s *Server) NodeApp(i int) *app.App {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nodes[i].app
}

// StopNode shuts node i down gracefully (as SIGTERM would); the balancer
// then skips it. StartNode starts it again on its address.
func (s *Server) StopNode(i int) {
	if s.lb != nil {
		s.lb.setDown(i, true)
	}
	s.stopNode(s.nodes[i], true)
}

// StartNode starts a stopped node i again on its address.
func (s *Server) StartNode(i int) {
	s.T.Helper()
	s.startNode(s.nodes[i])
	if s.lb != nil {
		s.lb.setDown(i, false)
	}
	if i == 0 {
		s.mu.Lock()
		s.App = s.nodes[0].app
		s.mu.Unlock()
	}
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

// StepClock steps node i's clock by d (back when negative) and leaves its
// timers as they are, as NTP or a VM resumed steps a wall clock. It needs
// WithClockOffsets.
func (s *Server) StepClock(i int, d time.Duration) {
	s.T.Helper()
	if s.Clocks == nil {
		s.T.Fatal("StepClock needs WithClockOffsets")
	}
	s.Clocks[i].Step(d)
}

// Now returns the server's current time in Unix ms.
func (s *Server) Now() int64 {
	if s.Clock != nil {
		return s.Clock.Now().UnixMilli()
	}
	return time.Now().UnixMilli()
}
