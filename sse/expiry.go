package sse

import (
	"strconv"
	"time"
)

// TokenWarning is how long before its token's exp a stream sends
// tokenWillExpire (at once when less is left): time for the client to get a
// fresh token and open the next stream before this one ends.
const TokenWarning = 30 * time.Second

// tokenWillExpireBlock is the warning event: data {"second": N}, N the
// whole seconds left (rounded up). Its id is the stream's position (the
// last id written or passed over), which moves the client nowhere new but
// tells it where the next stream must resume: a client that missed the
// synced event of the opening would otherwise not know its position.
func tokenWillExpireBlock(lastID int64, left time.Duration) []byte {
	secs := int64((left + time.Second - 1) / time.Second)
	if secs < 0 {
		secs = 0
	}
	b := append([]byte(nil), "id: "...)
	b = strconv.AppendInt(b, lastID, 10)
	b = append(b, "\nevent: tokenWillExpire\ndata: {\"second\":"...)
	b = strconv.AppendInt(b, secs, 10)
	return append(b, "}\n\n"...)
}
