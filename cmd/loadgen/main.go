// Command loadgen measures a callsig server over real HTTP and real SSE
// streams: full call cycles, idle streams, and invitation deadlines. It
// drives a running server (-url, with tokens minted from -secret) or starts
// one itself on a temporary database (-spawn).
//
//	go run ./cmd/loadgen -spawn cycle -duration 10s
//	go run ./cmd/loadgen -spawn -webhook cycle -rate 500 -duration 10s
//	go run ./cmd/loadgen -spawn streams -streams 15000
//	go run ./cmd/loadgen -spawn deadlines -invitations 1000 -timeout 5s -restart
//	go run ./cmd/loadgen -spawn -mode soak -duration 10m
//	go run ./cmd/loadgen -spawn -nodes 3 -postgres postgres://postgres@127.0.0.1:5432/postgres -postgres-fresh -nats nats://127.0.0.1:4222 cycle
//
// Every mode prints a readable table and, as its last line, one JSON object
// with the figures.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
		}
		os.Exit(1)
	}
}

// config holds every flag; each mode reads the ones it needs.
type config struct {
	mode string

	// the server
	url, secret, secretFile, issuer, audience string
	spawn                                     bool
	serverBin, synchronous, serverLogLevel    string
	serverFlags                               string
	cpuProfile                                string

	// cluster: several nodes on one PostgreSQL database (see cluster.go)
	nodes         int
	postgres      string
	postgresFresh bool
	nats          string
	urls          []string

	// cycle
	duration     time.Duration
	users        int
	workers      int
	rate         float64
	callTimeout  time.Duration
	eventTimeout time.Duration
	keyed        bool // every POST carries an Idempotency-Key of its own
	webhook      bool // an all-events webhook endpoint here (webhook.go)
	webhookDelay time.Duration
	webhookDrain time.Duration

	// streams
	streams         int
	openConcurrency int
	settle          time.Duration

	// deadlines
	invitations int
	restart     bool
	down        time.Duration

	// soak
	churn       int
	sampleEvery time.Duration
	warmup      time.Duration
}

const usageText = `usage: loadgen [flags] cycle|streams|deadlines|soak [flags]
       loadgen -mode cycle|streams|deadlines|soak [flags]

Modes:
  cycle      N users (-users) hold an SSE stream; workers run full call cycles
             (invite, invitee's stream gets callInvitationReceived, accept,
             caller's stream gets the accepted state change) at -rate cycles/s
             (0: as fast as possible) for -duration. With -webhook (and
             -spawn) every event also goes to an all-events webhook endpoint
             in loadgen: reports the lag from event to delivery and how long
             the backlog took to drain.
  streams    opens -streams idle streams; reports server memory per stream and
             the time to open them.
  deadlines  creates -invitations pending invitations with -timeout; invitees
             hold streams; reports how late each callInvitationTimeout arrives.
             With -restart (and -spawn) the server is killed (SIGKILL) once they
             are created and restarted after -down; reports how long the
             restart takes until the deadlines are armed again.
  soak       mixed load for -duration (use minutes): calls at -rate/s (default
             10) over -users steady streams, ending accepted, rejected,
             cancelled or timed out (-timeout, default 3s), and -churn streams
             coming and going (held 1-15 s, half of them resuming). Samples the
             server's goroutines, open fds, heap and RSS from /metrics every
             -sample-every and reports the least-squares slope of each per
             minute after -warmup, flagging any that is not flat.

Cluster: -spawn -nodes N -postgres URL [-postgres-fresh] [-nats URL] starts N
nodes on one PostgreSQL database; -urls u1,u2,… drives running nodes. cycle
and deadlines hold a user's stream on one node and send the request that
makes its event to another, and report per node.

Flags:
`

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.url, "url", "http://127.0.0.1:8080", "base URL of a running server (ignored with -spawn)")
	fs.StringVar(&c.secret, "secret", "", "the server's JWT secret, to mint tokens ($CALLSIG_JWT_SECRET)")
	fs.StringVar(&c.secretFile, "secret-file", "", "read the secret from this file (a development server's callsig.db.secret)")
	fs.StringVar(&c.issuer, "jwt-issuer", "", "iss claim of the minted tokens, when the server checks it")
	fs.StringVar(&c.audience, "jwt-audience", "", "aud claim of the minted tokens, when the server checks it")
	fs.BoolVar(&c.spawn, "spawn", false, "build and start a server on a temporary database, with the per-user rate limit off")
	fs.StringVar(&c.serverBin, "server-bin", "", "with -spawn: a prebuilt callsig server binary instead of building callsig/cmd/api")
	fs.StringVar(&c.synchronous, "synchronous", "FULL", "with -spawn: SQLite synchronous, FULL or NORMAL")
	fs.StringVar(&c.serverLogLevel, "server-log-level", "info", "with -spawn: the server's log level (its log goes to a temporary file)")
	fs.StringVar(&c.serverFlags, "server-flags", "", "with -spawn: more server flags, space-separated")
	fs.IntVar(&c.nodes, "nodes", 0, "with -spawn: server processes to start, all on the -postgres database (default 1; more than 1 needs -postgres)")
	fs.StringVar(&c.postgres, "postgres", "", "with -spawn: the postgres:// URL of the database the spawned nodes use, as is (default: a SQLite file)")
	fs.BoolVar(&c.postgresFresh, "postgres-fresh", false, "with -postgres: create a database callsig_load_<random> on that URL's server (the URL names the database to connect to for that), use it, and drop it at the end")
	fs.StringVar(&c.nats, "nats", "", "with -spawn and -postgres: NATS URL for the nodes ($CALLSIG_NATS_URL of each)")
	urls := fs.String("urls", "", "without -spawn: comma-separated base URLs of running nodes of one cluster, instead of -url")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write the load generator's own CPU profile to this file (it shares the cores with the server)")

	fs.DurationVar(&c.duration, "duration", 10*time.Second, "cycle and soak: how long to run the load")
	fs.IntVar(&c.users, "users", 0, "cycle: users holding a stream, paired caller/invitee (default 200); deadlines: invitees holding a stream (default 100)")
	fs.IntVar(&c.workers, "workers", 0, "cycle: concurrent cycles (default: one per pair); deadlines: concurrent invitations (default 64)")
	fs.Float64Var(&c.rate, "rate", 0, "cycle: cycles (invitations) started per second, 0 = as fast as possible; deadlines: invitations per second")
	fs.DurationVar(&c.callTimeout, "timeout", 0, "invitation timeout, whole seconds (cycle default 60s, deadlines default 5s)")
	fs.DurationVar(&c.eventTimeout, "event-timeout", 10*time.Second, "how long to wait for an event before counting it lost")
	fs.BoolVar(&c.keyed, "idempotency-keys", false, "send every POST with an Idempotency-Key of its own, as a client that retries safely does")
	fs.BoolVar(&c.webhook, "webhook", false, "cycle with -spawn: give the servers an all-events webhook endpoint in the load generator, verify every delivery and report the lag from event to delivery and the backlog")
	fs.DurationVar(&c.webhookDelay, "webhook-delay", 0, "with -webhook: the receiver answers after this long (a receiver that far away)")
	fs.DurationVar(&c.webhookDrain, "webhook-drain", 2*time.Minute, "with -webhook: how long to wait after the load for the webhook backlog to drain")

	fs.IntVar(&c.streams, "streams", 1000, "streams: idle streams to open")
	fs.IntVar(&c.openConcurrency, "open-concurrency", 128, "streams: connections being opened at once")
	fs.DurationVar(&c.settle, "settle", 3*time.Second, "streams: wait this long after opening before reading memory")

	fs.IntVar(&c.invitations, "invitations", 1000, "deadlines: pending invitations to create")
	fs.BoolVar(&c.restart, "restart", false, "deadlines: kill and restart the spawned server once the invitations exist")
	fs.DurationVar(&c.down, "down", 0, "deadlines with -restart: how long the server stays down")

	fs.StringVar(&c.mode, "mode", "", "the mode, instead of giving it as an argument")
	fs.IntVar(&c.churn, "churn", 50, "soak: streams that come and go")
	fs.DurationVar(&c.sampleEvery, "sample-every", 10*time.Second, "soak: how often to read the server's /metrics")
	fs.DurationVar(&c.warmup, "warmup", 0, "soak: samples before this are not fitted (default a fifth of -duration)")

	// Flags may come before and after the mode.
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		if c.mode != "" && c.mode != fs.Arg(0) {
			return c, fmt.Errorf("two modes given: -mode %s and %s", c.mode, fs.Arg(0))
		}
		c.mode = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return c, err
		}
	}
	if c.mode == "" {
		fs.Usage()
		return c, errors.New("no mode given")
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	for _, u := range strings.Split(*urls, ",") {
		if u = strings.TrimSpace(u); u != "" {
			c.urls = append(c.urls, u)
		}
	}
	if err := c.checkCluster(); err != nil {
		return c, err
	}
	return c, c.check()
}

func (c *config) check() error {
	switch c.mode {
	case "cycle":
		if c.users == 0 {
			c.users = 200
		}
		if c.callTimeout == 0 {
			c.callTimeout = 60 * time.Second
		}
		if c.users < 2 {
			return errors.New("cycle needs -users of at least 2")
		}
	case "streams":
		if c.streams < 1 {
			return errors.New("streams needs -streams of at least 1")
		}
	case "deadlines":
		if c.users == 0 {
			c.users = 100
		}
		if c.workers == 0 {
			c.workers = 64
		}
		if c.callTimeout == 0 {
			c.callTimeout = 5 * time.Second
		}
		if c.restart && !c.spawn {
			return errors.New("-restart needs -spawn: only a server it started can be killed and restarted")
		}
		if c.invitations < 1 || c.users < 1 {
			return errors.New("deadlines needs -invitations and -users of at least 1")
		}
	case "soak":
		if c.users == 0 {
			c.users = 100
		}
		if c.rate == 0 {
			c.rate = 10
		}
		if c.callTimeout == 0 {
			c.callTimeout = 3 * time.Second
		}
		if c.warmup == 0 {
			c.warmup = c.duration / 5
		}
		if c.users < 2 || c.churn < 0 || c.sampleEvery <= 0 {
			return errors.New("soak needs -users of at least 2, -churn of at least 0 and a positive -sample-every")
		}
	default:
		return fmt.Errorf("unknown mode %q (cycle, streams, deadlines or soak)", c.mode)
	}
	if c.mode != "streams" && (c.callTimeout%time.Second != 0 || c.callTimeout < time.Second || c.callTimeout > 600*time.Second) {
		return errors.New("-timeout must be whole seconds between 1s and 600s (the API takes seconds)")
	}
	if s := strings.ToUpper(c.synchronous); s != "FULL" && s != "NORMAL" {
		return fmt.Errorf("-synchronous must be FULL or NORMAL, not %q", c.synchronous)
	}
	c.synchronous = strings.ToUpper(c.synchronous)
	if c.webhook && (c.mode != "cycle" || !c.spawn) {
		return errors.New("-webhook works with cycle and -spawn: the spawned servers are given the endpoint")
	}
	if c.webhookDelay < 0 || c.webhookDrain < 0 {
		return errors.New("-webhook-delay and -webhook-drain must not be negative")
	}
	if c.rate < 0 || c.workers < 0 || c.users < 0 {
		return errors.New("-rate, -workers and -users must not be negative")
	}
	return nil
}

// target is the server under load, and what the modes share.
type target struct {
	cfg config
	// nodes are the servers: one, or the nodes of a cluster (-nodes,
	// -urls). base, client and srv are the first one's, for the modes that
	// drive a single server.
	nodes  []*node
	base   *url.URL
	client *client
	tokens *tokens
	srv    *server // nil unless spawned
	up     *gate   // shut while a spawned server restarts
	// prefix makes this run's user IDs unique, so a long-lived server's
	// older invitations never reach this run's streams.
	prefix string
	log    io.Writer
	// dropDB drops the database made for this run (-postgres-fresh).
	dropDB func(context.Context) error
	// hooks is the webhook receiver of -webhook (nil without).
	hooks *hookReceiver
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	limit, err := raiseOpenFileLimit()
	if err != nil {
		fmt.Fprintln(stderr, "loadgen: cannot raise the open-file limit:", err)
	}
	t, err := newTarget(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	defer t.close()
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	modes := map[string]func(context.Context, *target, *table, figures) error{
		"cycle": runCycle, "streams": runStreams, "deadlines": runDeadlines, "soak": runSoak,
	}
	tab := &table{}
	fig := figures{"mode": cfg.mode}
	usage := t.startUsage(ctx)
	if err := modes[cfg.mode](ctx, t, tab, fig); err != nil {
		return err
	}
	usage.report(ctx, tab, fig)
	tab.add("open-file limit", "%d", limit)
	tab.print(stdout)
	line, err := json.Marshal(fig)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", line)
	return err
}

// newTarget spawns the servers (with -spawn) and prepares the clients.
func newTarget(ctx context.Context, cfg config, stderr io.Writer) (*target, error) {
	t := &target{cfg: cfg, log: stderr, up: newGate()}
	raw := make([]byte, 3)
	_, _ = rand.Read(raw)
	t.prefix = "lg" + hex.EncodeToString(raw)

	secret := cfg.secret
	urls := cfg.urls
	if len(urls) == 0 {
		urls = []string{cfg.url}
	}
	var srvs []*server
	if cfg.webhook {
		var err error
		if t.hooks, err = newHookReceiver(cfg.webhookDelay); err != nil {
			return nil, err
		}
	}
	if cfg.spawn {
		var err error
		if srvs, err = t.spawnNodes(ctx); err != nil {
			t.close()
			return nil, err
		}
		urls = urls[:0:0]
		for _, s := range srvs {
			urls = append(urls, s.url())
		}
		secret = srvs[0].secret
	} else {
		if secret == "" && cfg.secretFile != "" {
			b, err := os.ReadFile(cfg.secretFile)
			if err != nil {
				return nil, err
			}
			secret = strings.TrimSpace(string(b))
		}
		if secret == "" {
			secret = os.Getenv("CALLSIG_JWT_SECRET")
		}
		if secret == "" {
			return nil, errors.New("give the server's JWT secret (-secret, -secret-file or $CALLSIG_JWT_SECRET), or use -spawn")
		}
	}
	ttl := max(time.Hour, 2*(cfg.duration+cfg.callTimeout+cfg.down))
	t.tokens = newTokens([]byte(secret), cfg.issuer, cfg.audience, ttl)
	for i, u := range urls {
		n := &node{index: i, url: u}
		if srvs != nil {
			n.srv = srvs[i]
		}
		t.nodes = append(t.nodes, n)
		base, err := url.Parse(u)
		if err != nil || base.Scheme == "" || base.Host == "" {
			t.close()
			return nil, fmt.Errorf("server URL %q is not an absolute http URL", u)
		}
		n.base, n.client = base, newClient(u, t.tokens)
		n.client.keyed = t.cfg.keyed
	}
	first := t.nodes[0]
	t.base, t.client, t.srv, t.cfg.url = first.base, first.client, first.srv, first.url
	return t, nil
}

// close stops the spawned servers, removes their files and drops a
// database made for the run.
func (t *target) close() {
	for _, n := range t.nodes {
		if n.client != nil {
			n.client.close()
		}
		if n.srv != nil {
			if err := n.srv.stop(); err != nil {
				fmt.Fprintf(t.log, "loadgen: node %d: %v\n", n.index, err)
			}
		}
	}
	for _, n := range t.nodes {
		if n.srv != nil {
			n.srv.cleanup()
		}
	}
	if t.hooks != nil {
		t.hooks.close()
	}
	if t.dropDB != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := t.dropDB(ctx); err != nil {
			fmt.Fprintln(t.log, "loadgen:", err)
		}
	}
}

// servers are the spawned server processes (none when driving running
// servers).
func (t *target) servers() []*server {
	var out []*server
	for _, n := range t.nodes {
		if n.srv != nil {
			out = append(out, n.srv)
		}
	}
	return out
}

// usage is the CPU time used during a run: by the server, by the load
// generator itself, and by anything else on the machine, which would skew
// the figures (the load generator shares the cores with the server).
type usage struct {
	t                   *target
	began               time.Time
	busy, self, server0 time.Duration
	writer0             writerTotals
}

func (t *target) startUsage(ctx context.Context) *usage {
	u := &usage{t: t, began: time.Now(), busy: machineBusy(), self: selfCPU(), writer0: readWriter(ctx, t)}
	for _, srv := range t.servers() {
		u.server0 += srv.totalCPU()
	}
	return u
}

func (u *usage) report(ctx context.Context, tab *table, fig figures) {
	wall := time.Since(u.began)
	readWriter(ctx, u.t).report(u.writer0, wall, tab, fig)
	self := selfCPU() - u.self
	tab.add("loadgen CPU", "%.2f s in %s", self.Seconds(), wall.Round(time.Millisecond))
	fig["loadgen_cpu_s"] = round2(self.Seconds())
	srvs := u.t.servers()
	if len(srvs) == 0 {
		return
	}
	// With several nodes: CPU and log errors summed, peak RSS the highest
	// node's (each node's is in the per-node lines).
	var server time.Duration
	var peak int64
	var logErrors int
	for _, srv := range srvs {
		server += srv.totalCPU()
		peak = max(peak, srv.peakRSS())
		logErrors += srv.logErrors()
	}
	server -= u.server0
	other := max(machineBusy()-u.busy-server-self, 0)
	name := "server"
	if len(srvs) > 1 {
		name = fmt.Sprintf("servers (%d)", len(srvs))
	}
	tab.add(name+" CPU", "%.2f s", server.Seconds())
	tab.add("other processes' CPU", "%.2f s (of %d cores × %s)", other.Seconds(), runtime.NumCPU(), wall.Round(time.Millisecond))
	tab.add(name+" peak RSS", "%s", mib(peak))
	tab.add(name+" log", "%d ERROR lines", logErrors)
	if len(srvs) > 1 {
		for _, n := range u.t.nodes {
			tab.add(fmt.Sprintf("node %d process", n.index), "%s: CPU %.2f s in all, peak RSS %s, %d ERROR lines", n.url, n.srv.totalCPU().Seconds(), mib(n.srv.peakRSS()), n.srv.logErrors())
		}
	}
	fig["synchronous"] = u.t.cfg.synchronous
	fig["server_cpu_s"] = round2(server.Seconds())
	fig["other_cpu_s"] = round2(other.Seconds())
	fig["peak_rss_bytes"] = peak
	fig["server_log_errors"] = logErrors
}

func round2(f float64) float64 {
	return math.Round(f*100) / 100
}
