package handlers

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"

	"callsig/calls"
	"callsig/internal/jsonenc"
)

// responseRecorder remembers the status and size of a response. It forwards
// Flush and Unwrap, so http.ResponseController and streaming still work
// through it.
type responseRecorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
	// onHijack, when set, is called on the handler's goroutine when the
	// handler takes the connection over, and returns what to call once the
	// connection closes, with the bytes written on it (see accessLog).
	onHijack func() (closed func(written int64))
	hijacked bool
}

// recorderFor reuses w when it already records, so stacked observers share
// one wrapper.
func recorderFor(w http.ResponseWriter) *responseRecorder {
	if rec, ok := w.(*responseRecorder); ok {
		return rec
	}
	return &responseRecorder{ResponseWriter: w}
}

func (w *responseRecorder) WriteHeader(code int) {
	if !w.wroteHeader && code >= 200 {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseRecorder) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Status is the status sent, 200 when the handler wrote nothing.
func (w *responseRecorder) Status() int {
	if !w.wroteHeader {
		return http.StatusOK
	}
	return w.status
}

func (w *responseRecorder) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *responseRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hands the connection over (an event stream, a lingering close)
// but keeps counting what is written on it, for the access log.
func (w *responseRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.hijacked = true
	if w.onHijack == nil {
		return conn, brw, nil
	}
	return &countingConn{Conn: conn, closed: w.onHijack()}, brw, nil
}

// countingConn counts the bytes written on a hijacked connection and
// reports them once, when it is closed.
type countingConn struct {
	net.Conn
	written atomic.Int64
	once    sync.Once
	closed  func(written int64)
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// SyscallConn reaches the socket below (see limitedConn.SyscallConn).
func (c *countingConn) SyscallConn() (syscall.RawConn, error) { return rawConn(c.Conn) }

func (c *countingConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.closed(c.written.Load()) })
	return err
}

// CloseWrite passes a half-close through (see lingeringClose).
func (c *countingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// writeJSON encodes v as the response body with status.
func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	resp, err := encodeJSON(status, v)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeStored(w, resp, false)
}

// encodeJSON is the one encoding of a JSON answer, shared by writeJSON and
// the answers the use-cases record for Idempotency-Key replay, so a replay
// is byte for byte the first answer.
func encodeJSON(status int, v any) (calls.StoredResponse, error) {
	body, err := jsonenc.Marshal(v)
	if err != nil {
		return calls.StoredResponse{}, err
	}
	return calls.StoredResponse{Status: status, ContentType: "application/json", Body: append(body, '\n')}, nil
}
