// Package cluster holds what several callsig nodes sharing one PostgreSQL
// database need beyond the store: the wake-ups (fanout.go) and presence
// (presence.go).
//
// Wake-ups (NATS): after a commit, a node announces its events to the
// others. An event that names its predecessor in its user's log
// (calls.Event.After) travels whole, and a node whose stream of the user
// has exactly that predecessor writes it as it is (sse.Hub.Committed);
// otherwise, and for an event without a predecessor, the user's streams
// there wake and read the shared event log (see sse.PerUserIDOrder). The
// log stays the truth: an event is handed over only where it provably
// follows on what the stream has, and a lost or late message only delays
// a delivery until a log read or the hub's periodic catch-up (at most
// about a second), never loses it.
//
// Subject design: one subject for the cluster (Options.Subject, default
// "callsig.wake"), each message a batch of events and user ids, and every node
// subscribed to it; a node looks each user up in its own hub, which costs
// a map lookup for a user without a stream there. Per-user subjects would
// spare a node the messages for users it has no stream of, but need a
// subscription (and its interest propagated through the servers) per user
// with a local stream, made and undone on every connect and disconnect, and
// a wake-up published before the new stream's subscription has reached the
// server would be lost. At 500 invitations/s a commit addresses two or
// three users: about 1,500 events a second, a few hundred bytes each,
// which the publisher batches (whatever queued while it published goes in
// one message of up to 32 KB), so each node reads at most a few hundred
// messages and well under a megabyte a second, far below what one NATS
// connection carries; decoding an event it has no stream for costs a node
// a few microseconds, where the log read it replaces costs a round trip
// to PostgreSQL. Past that, the subject would be split
// by a hash of the user id (callsig.wake.<n>) with a node subscribing to
// all parts: still no per-user interest.
//
// Never blocking a request: Committed only appends to an in-memory queue
// (bounded; a full queue drops, counts and leaves it to the catch-up); one
// goroutine publishes (nats.go buffers and flushes on its own). While
// NATS is unreachable publishing fails at once (no reconnect buffer: a
// wake-up replayed minutes later is useless) and is counted. The
// connection retries forever, including at startup, so a NATS server that
// is down never stops a node from starting or serving.
//
// A node's own wake-ups are not delivered back to it (the NoEcho
// connection option: it woke its streams itself at commit); each message
// also names its node, and one from this node is skipped.
//
// Presence (presence.go): a user is online
// while any live node holds a stream of theirs; each node keeps a lease and
// one row per user it holds, and the nodes sweep a dead node's rows after
// its lease, so its callers' calls follow the caller-offline rule. It never
// decides a call's fate itself: it only reports presence to calls.Service.
package cluster
