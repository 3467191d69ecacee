package app

import (
	"log/slog"
	"net"
)

// connReserve is how many connections beyond the cap are accepted to answer
// health checks and metrics scrapes (and a fast 503 to anything else).
const connReserve = 16

// fdHeadroom is how many of the process's file descriptors are kept for
// what is not a client connection: the database and its WAL, the webhook
// client's connections, the listener, logs. A tenth of the limit, at least
// 100.
func fdHeadroom(limit int) int { return max(100, limit/10) }

// maxConnections is the connection cap: the configured one, or the
// process's open-file limit (RLIMIT_NOFILE, which Go raises to the hard
// limit at start) less the headroom and the reserve. A configured cap above
// that is lowered to it: past the limit accept fails with EMFILE and new
// clients hang in the backlog, health checks included.
func maxConnections(configured int, log *slog.Logger) int {
	limit, err := openFileLimit()
	if err != nil {
		log.Warn("cannot read the open-file limit; connection cap as configured", "err", err)
		if configured > 0 {
			return configured
		}
		return 1024
	}
	limit = min(limit, 1<<20)
	budget := limit - fdHeadroom(limit) - connReserve
	if budget < 1 {
		budget = max(1, limit/2)
	}
	switch {
	case configured == 0:
		return budget
	case configured > budget:
		log.Warn("max-connections is above what the open-file limit allows; lowered",
			"configured", configured, "max", budget, "open_file_limit", limit)
		return budget
	}
	return configured
}

// perAddressCap is the connections one client address may hold (see
// handlers.ConnLimit.SetPerAddress), 0 for no cap: the configured share,
// or by default a sixteenth of the cap, at least 256 (an office or a
// carrier's NAT puts many users behind one address, each holding a stream
// and a request or two). A share of the whole cap or more is no cap.
func perAddressCap(configured, maxConns int) int {
	n := configured
	if n == 0 {
		n = max(256, maxConns/16)
	}
	if n >= maxConns {
		return 0
	}
	return n
}

// Listener wraps ln with the connection cap (see handlers.ConnLimit);
// cmd/api and the test kit serve on what it returns.
func (a *App) Listener(ln net.Listener) net.Listener { return a.conns.Listener(ln) }

// MaxConnections is the connection cap in force.
func (a *App) MaxConnections() int { return a.maxConns }
