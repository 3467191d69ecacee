package sse

import (
	"net/http"
	"time"
)

// Refuse answers an event stream the server cannot serve now (at its
// connection cap) with an empty stream that asks for a reconnection after
// retry: EventSource gives up for good on any status but 200, and
// reconnects after a stream that ends. Its one block repeats the client's
// Last-Event-ID when it has a valid one: per the WHATWG parser the block's
// end sets the client's last event ID to the block's id buffer, empty on
// each connection, so without it a spec-exact client would come back as a
// new stream and miss, without a reset, what happened while it was away.
// why is sent as a comment.
func Refuse(w http.ResponseWriter, r *http.Request, retry time.Duration, why string) {
	id, ok := lastEventID(r)
	b := openingBlock(retry, id, ok && id >= 0)
	b = append(b[:len(b)-1], ": "...) // the block's blank line goes last
	b = append(b, why...)
	b = append(b, "\n\n"...)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}
