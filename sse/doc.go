// Package sse delivers the committed call events to users over
// Server-Sent Events (GET /events) and tracks who is online.
//
// The Hub keeps the open streams by user and device. Each commit's events
// reach it (Hub.Committed) from the store where the store can hand them
// over the moment they are durable (SQLite's syncer, sqlite.Store.OnDurable),
// otherwise from the calls.Service after the commit (calls.Notifier; on
// PostgreSQL, and from other nodes through the cluster's wake-ups); the hub
// puts them, in id order, into the matching streams' small buffers and
// never waits for a stream. A stream that falls behind, or reconnects with
// Last-Event-ID, reads what it missed from the event log, which is the
// single source of truth: the hub's buffers only make delivery fast.
//
// A user is online while at least one of its streams is open
// (calls.Presence); the first open and the last close are reported to the
// service, as is every flushed callInvitationReceived (Service.MarkDelivered,
// retried when it fails, and made again from the log when the client resumes
// past an invitation still inviting: a lost report is re-derived, not kept).
// Those reports run on the hub's own workers (Hub.Run): this package must
// never block a request or a commit on the database, never let streams take
// the whole read pool, and never decides call rules itself.
package sse
