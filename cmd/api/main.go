// Command api runs the callsig server, or with `token` mints a user token,
// or with `migrate` copies a stopped node's SQLite file into PostgreSQL,
// or with `backup` copies a running node's SQLite file.
//
//	go run ./cmd/api                       # serve on :8080 with ./callsig.db
//	go run ./cmd/api token -user alice     # print a JWT for alice
//	go run ./cmd/api migrate -from callsig.db -to postgres://user@host/callsig
//	go run ./cmd/api backup -db callsig.db -to backup.db
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"callsig/calls"
	"callsig/handlers"
	"callsig/internal/app"
)

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "token" && os.Args[1] != "migrate" && os.Args[1] != "backup") {
		smallStacks() // the server only: it may hold tens of thousands of streams
	}
	// The first signal starts a graceful shutdown; serve then calls stop,
	// which gives the signals back their default action, so a second
	// SIGTERM or Ctrl-C kills a shutdown that takes too long.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, stop, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0) // -h: the usage was asked for and printed
		}
		fmt.Fprintln(os.Stderr, "callsig:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, stopSignals func(), args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "token" {
		return token(args[1:], getenv, stdout)
	}
	if len(args) > 0 && args[0] == "migrate" {
		return migrate(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "backup" {
		return backup(ctx, args[1:], getenv, stdout, stderr)
	}
	return serve(ctx, stopSignals, args, getenv, stderr)
}

const serveUsage = `Usage: callsig [flags]          serve (each flag also reads a CALLSIG_* variable)
       callsig token -user ID    print a token signed with the JWT secret (-h: its flags)
       callsig migrate -h        copy a stopped node's SQLite file into PostgreSQL
       callsig backup -h         copy a running node's SQLite file

Flags:
`

// serve reads like the table of contents of the server: configure, build,
// listen, and on a signal shut down in order. stopSignals is called as the
// shutdown begins (before anything is logged), so that from then on a
// signal has its default action: a second one kills the process.
func serve(ctx context.Context, stopSignals func(), args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := app.ParseConfig("callsig", args, getenv, func(fs *flag.FlagSet) {
		fs.SetOutput(stderr)
		fs.Usage = func() {
			fmt.Fprint(fs.Output(), serveUsage)
			fs.PrintDefaults()
		}
	})
	if err != nil {
		return err
	}
	log, err := app.NewLogger(cfg.LogLevel, cfg.LogFormat, stderr)
	if err != nil {
		return err
	}
	for _, name := range app.UnknownEnv(os.Environ()) {
		log.Warn("unknown setting ignored: no setting reads this variable (a typo?); see -h", "var", name)
	}
	if w := cfg.SecretWarning(); w != "" {
		log.Warn(w)
	}
	// Process-wide (see gc.go), so undone when serve returns.
	defer tuneGC(uint64(cfg.GCHeadroomMiB)<<20, getenv("GOGC") != "", log)()
	a, err := app.New(ctx, cfg, app.Options{Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", a.ListenAddr())
	if err != nil {
		a.Close()
		return err
	}
	ln = a.Listener(ln) // the connection cap
	log.Info("callsig listening", "addr", ln.Addr().String(), "db", app.RedactedDB(cfg.DB), "synchronous", cfg.Synchronous, "max_connections", a.MaxConnections())

	// The background parts outlive the signal: they stop only once the
	// HTTP server has finished its requests.
	partsCtx, stopParts := context.WithCancel(context.WithoutCancel(ctx))
	defer stopParts()
	ran := make(chan error, 1)
	go func() { ran <- a.Run(partsCtx) }()
	srv := a.Server()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	var failed error
	select {
	case failed = <-served:
		served <- failed // for the wait below
	case failed = <-ran:
		ran <- failed
		failed = fmt.Errorf("background part stopped: %w", failed)
	case <-ctx.Done():
	}
	stopSignals()
	if failed != nil {
		log.Error("stopping", "err", failed)
	}

	log.Info("shutting down: finishing in-flight requests and closing streams")
	// One deadline for the whole shutdown, as an orchestrator counts its
	// grace period (Kubernetes' terminationGracePeriodSeconds): each step
	// waited the whole timeout, one after the other, so a stop could take
	// three times it and be killed midway. The requests get it less a
	// reserve, kept for the background parts and the close, which share
	// what is left.
	deadline := time.Now().Add(cfg.ShutdownTimeout)
	requestsEnd := deadline.Add(-shutdownReserve(cfg.ShutdownTimeout))
	shutdownCtx, cancel := context.WithDeadline(context.Background(), requestsEnd)
	defer cancel()
	a.BeginShutdown()
	// An answer still being written then is one its client does not read:
	// cut it a little before the requests' end, so that it ends the
	// request and the drain finishes cleanly in time.
	a.CutAnswersAt(requestsEnd.Add(-cutLead(requestsEnd.Sub(time.Now()), cfg.ShutdownTimeout)))
	if err := srv.Shutdown(shutdownCtx); err != nil {
		// Requests cut off: no clean stop, whatever follows (exit 1,
		// as for a background part that would not stop).
		err = fmt.Errorf("in-flight requests did not finish within the shutdown timeout: %w", err)
		log.Error("stopping", "err", err)
		failed = errors.Join(failed, err)
		srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("serve", "err", err)
	}
	stopParts()
	if err := waitFor(ran, time.Until(deadline)); errors.Is(err, errShutdownTimeout) {
		err = fmt.Errorf("background parts: %w", err)
		log.Error("stopping", "err", err)
		failed = errors.Join(failed, err)
	} else if err != nil {
		log.Warn("background parts", "err", err)
	}
	// A part that did not stop may hold the store: closing it waits for
	// the part's statement, so that wait is bounded too. Whatever it had
	// not committed is rolled back, as after a crash.
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	if err := waitFor(closed, time.Until(deadline)); err != nil {
		return errors.Join(failed, fmt.Errorf("close: %w", err))
	}
	if failed != nil {
		return failed
	}
	log.Info("stopped")
	return nil
}

// shutdownReserve is the part of the shutdown timeout the requests in
// flight leave to the background parts and the database close: a tenth,
// at most a second (they stop in milliseconds unless the store hangs).
func shutdownReserve(timeout time.Duration) time.Duration {
	return min(timeout/10, time.Second)
}

// drainPoll is the longest http.Server.Shutdown waits between two looks at
// its connections (net/http's shutdownPollIntervalMax, 500 ms, plus its
// jitter of a tenth).
const drainPoll = 550 * time.Millisecond

// cutLead is how long before the requests' end (left from now) the
// answers still being written are cut: long enough for the drain to look
// again after they end. The shutdown reserve alone (300 ms of a 3 s
// timeout) was shorter than the drain's look, and a cut answer's end went
// unseen until the deadline had passed. Never more than half of what is
// left.
func cutLead(left, timeout time.Duration) time.Duration {
	return min(max(shutdownReserve(timeout), drainPoll), left/2)
}

// errShutdownTimeout is waitFor giving up.
var errShutdownTimeout = errors.New("did not stop within the shutdown timeout")

// waitFor waits for a step of the shutdown to report on done, at most
// timeout (what is left of the shutdown's): a background part stuck in a
// write must not keep the process from exiting, which then reports the
// failure (exit status 1). A step that has reported already is taken even
// with no time left.
func waitFor(done <-chan error, timeout time.Duration) error {
	select {
	case err := <-done:
		return err
	default:
	}
	t := time.NewTimer(max(timeout, 0))
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("%w (%s left)", errShutdownTimeout, max(timeout, 0).Round(time.Millisecond))
	}
}

// token prints a JWT signed with the configured (or development) secret.
func token(args []string, getenv func(string) string, stdout io.Writer) error {
	var (
		user  string
		ttl   time.Duration
		admin bool
	)
	cfg, err := app.ParseConfig("callsig token", args, getenv, func(fs *flag.FlagSet) {
		fs.StringVar(&user, "user", "", "user ID (the token's sub, and its -jwt-user-claim)")
		fs.DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
		fs.BoolVar(&admin, "admin", false, "add role=admin (webhook administration)")
	})
	if err != nil {
		return err
	}
	if user == "" {
		return errors.New("token: -user is required")
	}
	if !calls.ValidUserID(user) {
		return fmt.Errorf("token: -user %q is no user ID: 1 to 128 of [A-Za-z0-9_.@:-]", user)
	}
	if ttl <= 0 {
		return fmt.Errorf("token: -ttl %s must be positive", ttl)
	}
	secret, _, _, err := app.ResolveSecret(cfg)
	if err != nil {
		return err
	}
	tok, err := handlers.MintToken(secret, handlers.TokenRequest{UserID: user, TTL: ttl, Admin: admin, Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience, UserClaim: cfg.JWTUserClaim}, time.Now())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
