package cluster

import (
	"bytes"
	"strings"
)

// A wake-up message is text: the publishing node's id on the first line,
// then one user id a line. User ids are [A-Za-z0-9_.@:-] (handlers.ValidID),
// so a newline never occurs in one; a garbled message only wakes streams
// for nothing.

// maxBatchBytes bounds one message (NATS' default max payload is 1 MB).
const maxBatchBytes = 32 << 10

// encode appends messages for users (deduplicated by the caller) to out,
// each at most maxBatchBytes unless a single user id is longer.
func encode(node string, users []string, out [][]byte) [][]byte {
	var b []byte
	for _, u := range users {
		if b != nil && len(b)+1+len(u) > maxBatchBytes {
			out = append(out, b)
			b = nil
		}
		if b == nil {
			b = append(make([]byte, 0, min(maxBatchBytes, 64+len(users)*16)), node...)
		}
		b = append(b, '\n')
		b = append(b, u...)
	}
	if b != nil {
		out = append(out, b)
	}
	return out
}

// decode returns the node and users of a message.
func decode(msg []byte) (node string, users []string) {
	first, rest, _ := bytes.Cut(msg, []byte{'\n'})
	if len(rest) == 0 {
		return string(first), nil
	}
	return string(first), strings.Split(string(rest), "\n")
}
