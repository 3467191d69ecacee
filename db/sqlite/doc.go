// Package sqlite is the embedded storage backend, the default: it
// implements db.Store (calls.Store, the per-user event log the SSE layer
// replays, the webhook outbox the dispatcher drains, the Idempotency-Key
// records) over one database file, with its own embedded, numbered
// migrations (migrations/NNNN_*.sql, applied by db.Migrate). Its tests run
// the contract suite db/storetest and test what is SQLite's own.
//
// Every write goes through one writer goroutine that group-commits the
// requests waiting at that moment in one transaction, each that may fail
// alone in its own savepoint (a change to calls is replayed with the batch
// instead, see writer.go), and answers a request only once its commit is
// durable. Reads use
// a separate query-only connection pool and never block the writer. Due
// deadlines are fired in batches, each read and fired by one write request
// (UpdateDue, calls.DeadlineClaimer). The writer keeps what it needs again
// and again in memory, mirroring the rows exactly because it is their only
// writer: the calls it recently read or wrote (callcache.go, so a change
// does not read its call back, nor rewrite a call row it leaves as is) and
// which webhook types have subscribers (subscriptions.go).
//
// This package must never decide anything about calls: the state machine
// lives in package calls. It must never hold a transaction open across
// network I/O, and it never imports another adapter (handlers, sse) — with
// one exception: it implements the webhooks package's outbox port with that
// package's nouns (webhooks.Endpoint, webhooks.Attempt, …) and lets it build
// each message body (webhooks.NewMessage), as it implements calls.Store with
// the nouns of calls. Package webhooks imports no adapter, so no cycle arises.
package sqlite
