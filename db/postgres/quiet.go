package postgres

import (
	"context"
	"net"
	"sync"
	"time"
)

// answerBound is how long a connection may wait for the server's next
// bytes, once it has sent a request, before it counts as dead: twice the
// statement timeout and a second (the same as a write transaction's
// bound, writeContext). A healthy server is never silent that long: it
// ends every statement within statement_timeout, with an answer or an
// error.
func answerBound(statementTimeout time.Duration) time.Duration {
	return 2*statementTimeout + time.Second
}

// quietConn fails a read when the server has sent nothing for quiet since
// the request was sent or since its last bytes. The deadlines of writes
// (writeContext) and of requests bound only the statements run with their
// context; a background loop's reads and writes ran with a context of no
// deadline, and a server frozen on a live host (its kernel acknowledging
// every packet, so neither keepalive nor TCP_USER_TIMEOUT fires) held them
// until it answered: a node whose store failed over to another address
// kept its deadline scheduler or webhook dispatcher stuck on the old one.
// pgx's own read deadlines (set to interrupt a read whose context ended)
// are kept: the earlier of the two applies.
type quietConn struct {
	net.Conn
	quiet time.Duration

	mu    sync.Mutex
	pgx   time.Time // the read deadline pgx set (zero: none)
	until time.Time // the server must have spoken by then (zero: nothing asked)
}

// dialQuiet wraps the connections dial opens in a quietConn.
func dialQuiet(dial func(ctx context.Context, network, addr string) (net.Conn, error), quiet time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &quietConn{Conn: c, quiet: quiet}, nil
	}
}

// apply sets the read deadline to the earlier of pgx's and ours. mu is held.
func (c *quietConn) apply() error {
	d := c.until
	if !c.pgx.IsZero() && (d.IsZero() || c.pgx.Before(d)) {
		d = c.pgx
	}
	return c.Conn.SetReadDeadline(d)
}

// Write starts the wait for an answer, and starts it again once the bytes
// are written: a write held by a full socket buffer (a large batch the
// server reads while it runs the statements before) was itself time the
// server spent, not silence.
func (c *quietConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.until = time.Now().Add(c.quiet)
	err := c.apply()
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.mu.Lock()
		c.until = time.Now().Add(c.quiet)
		_ = c.apply() // fails only on a closed connection, which the next read reports
		c.mu.Unlock()
	}
	return n, err
}

func (c *quietConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.mu.Lock()
		c.until = time.Now().Add(c.quiet) // it speaks: the wait starts again
		if aerr := c.apply(); err == nil {
			err = aerr
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *quietConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

func (c *quietConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pgx = t
	return c.apply()
}
