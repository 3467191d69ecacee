// Package tcpopt sets the TCP socket options callsig relies on where the
// platform has them: both the server's accepted connections and the
// PostgreSQL dialer close a connection whose peer went silent.
package tcpopt
