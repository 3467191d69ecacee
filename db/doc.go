// Package db holds what every storage backend of callsig shares: the Store
// every backend implements (the union of the ports the application needs),
// the migration runner each backend drives with its own embedded, numbered
// migrations, the row mapping of the shared schema, and the errors the
// layers above classify (ErrClosed, PanicError).
//
// The backends live beside it: db/sqlite, the embedded default, and
// db/postgres for cluster mode (issue 10; not selectable at startup yet).
// db/storetest is the one contract suite every backend runs.
// This package imports no backend; the composition root (internal/app)
// picks one from the configured DSN.
//
// Storage must never decide anything about calls: the state machine lives
// in package calls. A backend implements the webhooks package's outbox port
// with that package's nouns (webhooks.Endpoint, webhooks.Attempt, …) as it
// implements calls.Store with the nouns of calls; package webhooks imports
// no adapter, so no cycle arises.
package db
