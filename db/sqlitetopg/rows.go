package sqlitetopg

import (
	"database/sql"
	"strings"
	"unicode/utf8"
)

// rowSource hands SQLite rows to pgx's CopyFrom one at a time
// (pgx.CopyFromSource), converting 0/1 flags to booleans and text to text
// PostgreSQL can hold (fitText).
type rowSource struct {
	rows    *sql.Rows
	columns []column
	ints    []int64
	texts   []string
	blobs   [][]byte
	ptrs    []any
	err     error
	// fitted counts, per column, the values fitText changed.
	fitted []int64
	// key is the index of the column whose unfit value drops its row (see
	// table.key), -1 for none; dropped counts those rows.
	key     int
	dropped int64
}

func newRowSource(rows *sql.Rows, columns []column, key string) *rowSource {
	r := &rowSource{rows: rows, columns: columns,
		ints: make([]int64, len(columns)), texts: make([]string, len(columns)),
		blobs: make([][]byte, len(columns)), ptrs: make([]any, len(columns)),
		fitted: make([]int64, len(columns)), key: -1}
	for i, c := range columns {
		if c.name == key {
			r.key = i
		}
		switch c.kind {
		case integer, flag:
			r.ptrs[i] = &r.ints[i]
		case text:
			r.ptrs[i] = &r.texts[i]
		case blob:
			r.ptrs[i] = &r.blobs[i]
		}
	}
	return r
}

func (r *rowSource) Next() bool {
	for {
		if r.err != nil || !r.rows.Next() {
			return false
		}
		if r.err = r.rows.Scan(r.ptrs...); r.err != nil {
			return false
		}
		if r.key < 0 {
			break
		}
		if _, unfit := fitText(r.texts[r.key]); !unfit {
			break
		}
		r.dropped++
	}
	for i, c := range r.columns {
		if c.kind != text {
			continue
		}
		var changed bool
		if r.texts[i], changed = fitText(r.texts[i]); changed {
			r.fitted[i]++
		}
	}
	return true
}

// fitText returns s as PostgreSQL's text can hold it, and whether that
// changed it: each U+0000 and each run of bytes that is not UTF-8 becomes
// U+FFFD. SQLite's TEXT holds either; PostgreSQL refuses the whole COPY
// for one such value ("invalid byte sequence for encoding UTF8"). Servers
// before the API refused them stored a NUL decoded from "\u0000" in
// extendedData and webhook descriptions, a receiver's NUL in a delivery's
// last_error, and a browser's Latin-1 byte in an Idempotency-Key. A JSON
// text (events.data) holds a NUL only as the escape \u0000, six ASCII
// bytes, which PostgreSQL keeps as they are. The ids (user, device, call)
// are of ASCII characters, and a stored response's Content-Type is the
// server's own, so they never change here; stored response bodies and
// webhook payloads are BYTEA, copied byte for byte.
func fitText(s string) (string, bool) {
	if strings.IndexByte(s, 0) < 0 && utf8.ValidString(s) {
		return s, false
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD"), true
}

// Values returns a fresh slice per row: pgx may still hold the previous
// one while encoding.
func (r *rowSource) Values() ([]any, error) {
	out := make([]any, len(r.columns))
	for i, c := range r.columns {
		switch c.kind {
		case integer:
			out[i] = r.ints[i]
		case flag:
			out[i] = r.ints[i] != 0
		case text:
			out[i] = r.texts[i]
		case blob:
			if b := r.blobs[i]; b != nil {
				out[i] = b[1:] // the byte reads put ahead (table.reads)
			} else {
				out[i] = []byte(nil) // NULL
			}
		}
	}
	return out, nil
}

func (r *rowSource) Err() error {
	if r.err != nil {
		return r.err
	}
	return r.rows.Err()
}
