package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"callsig/db"
	"callsig/db/sqlitetopg"
	"callsig/internal/app"
)

const migrateUsage = `Usage: callsig migrate -from <sqlite file> -to postgres://user@host/db

Copies a node's SQLite data (calls and their users, pending deadlines,
webhook endpoints with their secrets and deliveries, live idempotency keys,
and the event log kept for replay, ids unchanged) into an EMPTY PostgreSQL
database, in one transaction: on any error nothing is written.

Text PostgreSQL cannot hold (a U+0000, which older servers stored, or
bytes that are not UTF-8) is copied with U+FFFD in its place; the report
counts the values changed, per column.

Stop the node first: the file is opened read-only, and a file another
process has open is refused. A target that already holds data, or that a
callsig node is running on, is refused. Then start the nodes with CALLSIG_DB
set to the PostgreSQL URL and the same JWT secret; clients keep their
Last-Event-ID and paging cursors, and callers offline at the stop get a
fresh grace from the first node's start, as on a restart.

Flags:
`

// migrate is `callsig migrate`: it parses flags and prints; the copy is
// db/sqlitetopg's.
func migrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var from, to string
	fs := flag.NewFlagSet("callsig migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&from, "from", "", "the stopped node's SQLite file (its CALLSIG_DB)")
	fs.StringVar(&to, "to", "", "the empty PostgreSQL database, a postgres:// URL")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), migrateUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("migrate: unexpected argument %q", fs.Arg(0))
	case from == "" || to == "":
		return errors.New("migrate: -from and -to are required (see callsig migrate -h)")
	case !app.IsPostgresDSN(to):
		return errors.New("migrate: -to must be a postgres:// or postgresql:// URL")
	}
	target := sqlitetopg.Describe(to)
	fmt.Fprintf(stdout, "copying %s into %s\n", from, target)
	rep, err := sqlitetopg.Copy(ctx, from, to, sqlitetopg.Options{})
	switch {
	case errors.Is(err, sqlitetopg.ErrCommitUnknown):
		return fmt.Errorf("migrate: run it again to know whether it is in (if it is, the target is refused as not empty): %w", err)
	case err != nil:
		return fmt.Errorf("migrate: nothing was copied: %w", err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, t := range rep.Tables {
		fmt.Fprintf(tw, "%s\t%d\t\n", t.Table, t.Rows)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rep.Replaced) > 0 {
		fmt.Fprintln(stdout, "text PostgreSQL cannot store (U+0000, or bytes that are not UTF-8) was copied with U+FFFD in its place, in:")
		for _, r := range rep.Replaced {
			fmt.Fprintf(stdout, "  %s.%s: %d %s\n", r.Table, r.Column, r.Values, plural(r.Values, "value", "values"))
		}
	}
	for _, d := range rep.Dropped {
		fmt.Fprintf(stdout, "left out of %s: %d %s whose key is not UTF-8 (no server since accepts such a key: no client can replay it)\n",
			d.Table, d.Rows, plural(d.Rows, "row", "rows"))
	}
	if rep.ClockBehind > 0 {
		fmt.Fprintln(stderr, "warning:", db.ClockBehindWarning(rep.ClockBehind))
	}
	_, err = fmt.Fprintf(stdout, "copied into %s in %s (next event id after %d)\n", target, rep.Took.Round(1e6), rep.LastEventID)
	return err
}

// plural returns one when n is 1, many otherwise.
func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
