// Package webhooks delivers call events to third-party backends as signed
// HTTP POSTs that follow the Standard Webhooks specification: the signer and
// verifier, the registry of endpoints behind the admin API, an SSRF-safe HTTP
// client, and the dispatcher that drains the outbox with retries.
//
// Delivery only ever reads what the store committed: the outbox rows are
// written in the transaction of the call change that caused them, so a crash
// or a restart loses nothing, and a delivery is sent at least once with the
// same webhook-id on every attempt.
//
// This package must never decide anything about calls, never import another
// adapter (db, handlers, sse), and never hold a database transaction across
// the network: an attempt is claimed, sent, then recorded, each on its own.
package webhooks
