package sse

import (
	"net/http"
	"time"

	"callsig/internal/jsonenc"
)

// Refuse answers an event stream the server cannot serve now (at its
// connection cap, over a rate limit) with an empty stream that asks for a
// reconnection after retry: EventSource gives up for good on any status
// but 200, and reconnects after a stream that ends. Its one block repeats
// the client's Last-Event-ID when it has a valid one: per the WHATWG
// parser the block's end sets the client's last event ID to the block's
// id buffer, empty on each connection, so without it a spec-exact client
// would come back as a new stream and miss, without a reset, what
// happened while it was away.
//
// The block is an event, refused, with the retry and why as its data: to
// EventSource the opening of a refused stream looks like any other's, and
// a client that keeps a working stream until the next one opens (a token
// renewal) must be able to tell that the next one is not serving. One
// that does not listen for refused ignores it, as EventSource ignores any
// event type nobody listens to.
func Refuse(w http.ResponseWriter, r *http.Request, retry time.Duration, why string) {
	id, ok := lastEventID(r)
	b := openingBlock(retry, id, ok && id >= 0)
	b = append(b[:len(b)-1], refusedFields(retry, why)...) // the block's blank line goes last
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// refusedFields is the event and data lines of Refuse's block and the
// blank line that ends it.
func refusedFields(retry time.Duration, why string) []byte {
	data, err := jsonenc.Marshal(struct {
		Retry  int64  `json:"retry"`
		Reason string `json:"reason"`
	}{retry.Milliseconds(), why})
	if err != nil { // a struct of an int and a string always encodes
		data = []byte("{}")
	}
	b := append([]byte(nil), "event: refused\ndata: "...)
	b = appendOneLine(b, data)
	return append(b, "\n\n"...)
}
