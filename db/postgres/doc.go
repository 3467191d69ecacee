// Package postgres is the storage backend of cluster mode: it implements
// db.Store over one PostgreSQL database that several callsig nodes share,
// with its own embedded, numbered migrations (migrations/NNNN_*.sql,
// applied by db.Migrate under an advisory lock, so nodes starting together
// migrate once). Its tests run the contract suite db/storetest against a
// fresh database each.
//
// Driver: pgx v5 through its database/sql driver (pgx/v5/stdlib) with sqlx,
// not pgxpool. The schema and the row mapping are shared with db/sqlite
// (db.CallColumns, db.ScanCall, … read a database/sql Scanner), the queries
// are ported one for one, and database/sql's pool is enough for one
// transaction per request; pgxpool's extra speed (binary protocol, no
// database/sql layer) is not worth a second row-mapping path until a
// benchmark says so.
//
// Writes: one transaction per Update (no writer goroutine, no savepoints):
// PostgreSQL group-commits concurrent transactions itself, and every
// session runs with synchronous_commit on, so Update returns only once its
// commit is durable. A panicking fn is rolled back and returned as a
// *db.PanicError. Writers of one call take turns on its row (calls.Tx.Call
// is SELECT … FOR UPDATE).
//
// A write's statements go in pipelines on its connection (pipe.go, reached
// through database/sql's Conn.Raw), one round trip per answer the
// use-case waits for: BEGIN rides on the first, and Save's writes ride on
// COMMIT's, so an invitation costs two round trips (its busy check, its
// commit) and a delivery mark or an answer two (the call's load, the
// commit). A check of what such a write did is made in SQL
// (callsig_fail, migration 0003): its result is read after COMMIT ran.
// The one exception left: a result a callback cannot scan (a bug, never
// data) is reported as an error for a change that committed, as a
// connection lost during COMMIT would be.
//
// Event ids: per user, strictly increasing in that user's commit order, on
// every node. Each event's id is taken by updating the recipient's row of
// event_users (INSERT … ON CONFLICT DO UPDATE … RETURNING) inside the
// change's transaction; the row stays locked until commit, so the user's
// next writer takes its id only after this one committed or rolled back.
// The value written is nextval of one global sequence, evaluated once the
// row lock is held. So the id is at the same time the per-user sequence
// and unique across users; there is no second, global id column.
// Decision: the methods that assume one global sequence keep their meaning
// with that single id, so no bigserial is kept beside it: EventRecipients
// names the users of a range of (globally unique) ids, OldestEventID is
// the smallest id kept and LastEventID the sequence's position (never
// lowered by pruning). What does NOT hold any more is a global commit
// order: ids of different users may commit out of order (and rolled-back
// transactions leave gaps), so a reader must follow ids per user; the SSE
// hub's release in one global order is the cluster session's change. A
// change addressing several users locks their rows in user order first,
// so two changes never deadlock on them.
//
// Busy check: BusyUsers locks the invitees' event_users rows before
// reading, and Save locks the rows of the users it writes busy, so a check
// waits for a change making one of its users busy and reads its outcome,
// as with SQLite's single writer. Glare (two users inviting each other at
// the same instant) would deadlock if the check locked the invitees and
// Save the caller later; calls.Service therefore takes every user's row
// first, in user order (calls.UserLocker, callsTx.LockUsers), so the two
// invitations wait for each other instead. As a net for any conflict left,
// Update runs a transaction PostgreSQL aborts as a deadlock (40P01) or
// serialization failure (40001) again, up to 4 times with a short backoff
// (calls.Store.Update allows fn to run more than once), before answering
// 503.
//
// Deadlines: every node runs the scheduler. UpdateDue (calls.
// DeadlineClaimer) reads the due deadlines with their calls locked
// FOR UPDATE SKIP LOCKED inside the transaction that fires them, so nodes
// take disjoint calls and never wait for each other; each deadline fires
// once, and the pure Expire still finds one cleared by a change that
// committed meanwhile. DueDeadlines stays the plain read of the contract.
// In cluster mode the scheduler also reads NextDeadline at least every
// second (calls.Config.DeadlinePoll): a deadline written by a node that
// died is earlier than anything the others armed.
//
// Presence (presence.go, migration 0002): node leases and (node, user)
// rows for cluster.Presence, on a small pool of its own, timed by the
// database's clock.
//
// CallCounts counts started calls on their partial index and, once the
// table holds 100,000 rows or more, takes the ended ones from the
// planner's estimate (pg_class.reltuples): a scrape never scans the table.
//
// Webhook outbox: claims take due rows FOR UPDATE SKIP LOCKED and write a
// lease (locked_until), so the dispatchers of several nodes never claim one
// delivery twice, and a dead node's leases lapse for the others.
//
// Idempotency keys are rows with a unique (scope, key), written in the
// transaction of the change they record. Reading a key inside a write takes
// a transaction-scoped advisory lock on it, so the same key sent to two
// nodes at once runs once: the second waits, then replays the first's
// answer.
//
// Failures: an unreachable server, a connection lost, too many
// connections, a statement timeout, a deadlock or serialization failure,
// a session the server ended (any FATAL) are wrapped in
// calls.ErrUnavailable (503 with Retry-After, never 500); after Close
// every call fails with db.ErrClosed.
package postgres
