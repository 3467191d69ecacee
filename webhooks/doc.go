// Package webhooks delivers call events to third-party backends as signed
// HTTP POSTs that follow the Standard Webhooks specification: the message
// format (NewMessage) and its signer and verifier, the registry of
// endpoints behind the admin API, an SSRF-safe HTTP client, the dispatcher
// that drains the outbox with retries, a per-endpoint share of its workers
// and a circuit breaker per endpoint, and the retention that prunes
// finished deliveries.
//
// Delivery only ever reads what the store committed: the outbox rows are
// written in the transaction of the call change that caused them, so a crash
// or a restart loses nothing, and a delivery is sent at least once with the
// same webhook-id on every attempt. The package owns the nouns of that
// outbox (Endpoint, Delivery, Attempt, Outcome) and its storage port
// (Store), which every storage backend under db/ implements.
//
// This package must never decide anything about calls, never import another
// adapter (db, handlers, sse), and never hold a database transaction across
// the network: an attempt is claimed, sent, then recorded, each on its own.
// A slow or failing endpoint holds at most its own share of the workers.
package webhooks
