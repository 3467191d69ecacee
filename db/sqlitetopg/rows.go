package sqlitetopg

import "database/sql"

// rowSource hands SQLite rows to pgx's CopyFrom one at a time
// (pgx.CopyFromSource), converting 0/1 flags to booleans.
type rowSource struct {
	rows    *sql.Rows
	columns []column
	ints    []int64
	texts   []string
	blobs   [][]byte
	ptrs    []any
	err     error
}

func newRowSource(rows *sql.Rows, columns []column) *rowSource {
	r := &rowSource{rows: rows, columns: columns,
		ints: make([]int64, len(columns)), texts: make([]string, len(columns)),
		blobs: make([][]byte, len(columns)), ptrs: make([]any, len(columns))}
	for i, c := range columns {
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
	if r.err != nil || !r.rows.Next() {
		return false
	}
	r.err = r.rows.Scan(r.ptrs...)
	return r.err == nil
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
			out[i] = r.blobs[i] // nil is NULL
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
