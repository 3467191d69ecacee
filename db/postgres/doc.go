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
// as with SQLite's single writer. Known limit: the check locks the
// invitees before the invitation's Save locks its caller, so two users
// inviting each other at the same instant ("glare") can deadlock;
// PostgreSQL aborts one after deadlock_timeout (1 s by default), which is
// answered 503 and retried by the client. Update does not re-run fn on
// such an abort: calls.Store does not promise that fn may run twice.
//
// Deadlines: DueDeadlines is a plain read, the same on every node; a
// deadline fires once because Service.Expire's transaction locks the call
// row (FOR UPDATE) and the pure Expire does nothing when the deadline was
// cleared by the node that fired first. A claim with SKIP LOCKED (a node
// passing over a deadline another is firing, rather than waiting for it)
// would need a claiming method on calls.Tx; that is left to the cluster
// session, the interface is unchanged here.
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
// connections, a statement timeout, a deadlock or serialization failure
// are wrapped in calls.ErrUnavailable (503 with Retry-After, never 500);
// after Close every call fails with db.ErrClosed.
package postgres
