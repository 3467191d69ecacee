package handlers

import (
	"bufio"
	"net"
	"net/http"
	"time"
)

// The bounds of a lingering close (nginx's lingering_close, with shorter
// times): how long in all, how long between two reads, and how many bytes
// are read and dropped before the connection is closed anyway.
const (
	lingerTime    = 10 * time.Second
	lingerTimeout = 2 * time.Second
	lingerMax     = 16 << 20
)

// refuseTooLarge answers 413 to a body over limit and closes the connection
// the way nginx does (a lingering close), so that the client reads the
// answer.
//
// The client may still be sending the body. Closing a socket with unread
// data makes the kernel send RST, and an RST that reaches the client before
// it has read our answer destroys the answer in its receive buffer: a
// client that sends the whole body before reading (Node's http, curl
// without Expect) sees ECONNRESET instead of the 413. So: answer, stop
// writing (FIN), read and drop what still comes for a bounded time and
// size, then close. net/http alone closes after 500 ms without reading.
func refuseTooLarge(w http.ResponseWriter, r *http.Request, limit int64) {
	w.Header().Set("Connection", "close")
	writeError(w, r, &http.MaxBytesError{Limit: limit})
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return
	}
	conn, brw, err := rc.Hijack()
	if err != nil {
		return // HTTP/2 (the stream is reset, not the connection) or a test recorder
	}
	lingeringClose(conn, brw.Reader)
}

// lingeringClose half-closes conn after the answer written on it, then
// drains what the client still sends (r holds what net/http already
// buffered) until it closes its side, goes quiet for lingerTimeout, or the
// bounds run out, and closes conn.
func lingeringClose(conn net.Conn, r *bufio.Reader) {
	defer conn.Close()
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil {
			return
		}
	}
	end := time.Now().Add(lingerTime)
	buf := make([]byte, 32<<10)
	for left := lingerMax; left > 0; {
		at := time.Now().Add(lingerTimeout)
		if at.After(end) {
			at = end
		}
		if err := conn.SetReadDeadline(at); err != nil {
			return
		}
		n, err := r.Read(buf[:min(len(buf), left)])
		left -= n
		if err != nil { // io.EOF: the client is done; a timeout: the bounds ran out
			return
		}
	}
}
