package handlers

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxTextDepth bounds invalidText's walk: the schemas of the API nest a
// few levels at most.
const maxTextDepth = 32

// invalidText finds a JSON string in body (a key or a value) that is not
// valid Unicode: raw bytes that are not UTF-8, or a \u escape of an
// unpaired surrogate. encoding/json silently turns both into U+FFFD, so
// without this check extendedData would be stored altered; RFC 8259 §8.1
// requires UTF-8. It returns the string's field ("extendedData",
// "pushConfig/title", "invitees/2"; "body" outside any object). A body
// that is not well-formed JSON is left to the decoder to report.
func invalidText(body []byte) (field string, bad bool) {
	if utf8.Valid(body) && !bytes.Contains(body, []byte(`\ud`)) && !bytes.Contains(body, []byte(`\uD`)) {
		return "", false // the common case: no walk
	}
	type level struct {
		object  bool
		wantKey bool
		key     string
		index   int
	}
	var stack []*level
	path := func() string {
		parts := make([]string, 0, len(stack))
		for _, l := range stack {
			if l.object {
				parts = append(parts, l.key)
			} else {
				parts = append(parts, strconv.Itoa(l.index))
			}
		}
		if len(parts) == 0 {
			return "body"
		}
		return strings.Join(parts, "/")
	}
	valueDone := func() {
		if n := len(stack); n > 0 {
			if top := stack[n-1]; top.object {
				top.wantKey = true
			} else {
				top.index++
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	for {
		start := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		raw := body[start:dec.InputOffset()]
		var top *level
		if n := len(stack); n > 0 {
			top = stack[n-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				if len(stack) == maxTextDepth {
					// No request of the API nests this deep, so the
					// validator refuses the body whatever its strings; the
					// walk stops here, as one level per bracket made a
					// 1 MiB body of "[" cost 150 MB and half a second.
					if utf8.Valid(body) {
						return "", false
					}
					return "body", true
				}
				stack = append(stack, &level{object: t == '{', wantKey: t == '{'})
			default:
				stack = stack[:len(stack)-1]
				valueDone()
			}
		case string:
			isKey := top != nil && top.object && top.wantKey
			if isKey {
				top.key = t // a bad key is named itself
			}
			if replaced(t, raw) {
				return path(), true
			}
			if isKey {
				top.wantKey = false
			} else {
				valueDone()
			}
		default:
			valueDone()
		}
	}
}

// replaced reports whether decoding raw (one JSON string token, with the
// separators before it) into s replaced something with U+FFFD: s holds
// more of them than raw spelled out, literally or as \ufffd.
func replaced(s string, raw []byte) bool {
	n := strings.Count(s, "\uFFFD")
	if n == 0 {
		return false
	}
	lower := bytes.ToLower(raw)
	spelled := bytes.Count(lower, []byte(`\ufffd`)) + bytes.Count(raw, []byte("\uFFFD"))
	return n > spelled
}
