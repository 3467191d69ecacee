package postgres

import (
	"net"
	"time"
)

// A network path to PostgreSQL that goes silent (a dead host, a
// partition: packets dropped, no reset) leaves a connection waiting for
// an answer for as long as the kernel retransmits, about 15 minutes;
// statement_timeout cannot help, as the server enforces it. Each such
// connection held a request, a background loop or /readyz that long.
// The dialer bounds it on our side: keepalive probes find an idle path
// dead, and TCP_USER_TIMEOUT (Linux) closes a connection whose sent
// bytes stay unacknowledged, both within about silentPathTimeout.
const silentPathTimeout = 20 * time.Second

// connectTimeout bounds opening a connection when the DSN sets no
// connect_timeout.
const connectTimeout = 10 * time.Second

// dialer returns the dialer of the pool's connections; timeout is the
// DSN's connect_timeout (0: none given).
func dialer(timeout time.Duration) *net.Dialer {
	if timeout <= 0 {
		timeout = connectTimeout
	}
	return &net.Dialer{
		Timeout: timeout,
		KeepAliveConfig: net.KeepAliveConfig{
			Enable: true, Idle: 5 * time.Second, Interval: 5 * time.Second, Count: 3,
		},
		Control: userTimeout(silentPathTimeout),
	}
}
