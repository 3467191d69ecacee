// Package sqlitetopg moves a deployment up from its SQLite file to
// PostgreSQL (issue 10, "Moving up"): Copy reads a stopped node's file
// and writes everything a cluster needs to carry on into an empty
// PostgreSQL database, in one transaction, so a failed copy leaves the
// target as empty as it found it.
//
// Ids are kept, not translated. SQLite's event ids are one global
// autoincrement, hence unique and increasing per user in commit order,
// which is what db/postgres's ids are; keeping them means a client's
// Last-Event-ID still resumes (or gets `reset` when older than the log
// kept), call seqs keep nextFlag cursors valid, and call_users rows keep
// pointing at their invitation events. The sequences are then moved past
// the copied ids (event_ids, the identities), and event_users gets each
// user's newest id, as db/postgres's writers expect.
//
// Rows are copied as they are, but for two things: text PostgreSQL cannot
// hold (a U+0000, bytes that are not UTF-8) gets U+FFFD in its place, the
// values changed counted in the Report; and no caller-offline grace stays
// armed, so the first node arms them from its start, as a SQLite restart
// does (tables.go says why).
//
// It never writes to the SQLite file (opened read-only, read in one
// snapshot), never fills a target a node is running on, and never prints
// or wraps the target's DSN, which may hold a password.
package sqlitetopg
