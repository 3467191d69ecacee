-- 0001: the initial schema.
-- Times are Unix milliseconds (INTEGER); booleans are 0/1. Columns are NOT NULL
-- with defaults so rows scan into plain Go values without sql.Null* wrappers.

-- One row per call. seq is the paging cursor (nextFlag). AUTOINCREMENT so a
-- seq is never reused, even after the newest rows are deleted: a client's
-- saved cursor can then never skip or repeat a call.
CREATE TABLE calls (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    id                 TEXT    NOT NULL UNIQUE, -- the implicit unique index loads a call by its public ID
    caller             TEXT    NOT NULL,
    mode               TEXT    NOT NULL,
    state              TEXT    NOT NULL,
    timeout            INTEGER NOT NULL,        -- seconds
    extended_data      TEXT    NOT NULL DEFAULT '',
    create_time        INTEGER NOT NULL,
    end_time           INTEGER NOT NULL DEFAULT 0,
    end_reason         TEXT    NOT NULL DEFAULT '',
    not_received_check INTEGER NOT NULL DEFAULT 0,
    caller_tracked     INTEGER NOT NULL DEFAULT 0,
    caller_offline_at  INTEGER NOT NULL DEFAULT 0 -- caller-offline deadline, 0: none
);

-- The scheduler's caller-offline deadlines. Partial: only armed rows are in it,
-- so it stays a handful of entries however long the call history grows, and
-- "earliest due" is the first entry.
CREATE INDEX calls_caller_offline ON calls (caller_offline_at) WHERE caller_offline_at > 0;

-- A caller's started calls (its stream went on- or offline, or it starts a new
-- call). Partial on state = 'started': ended calls, nearly all rows, stay out.
-- Queries must spell the literal state = 'started' for SQLite to use it.
CREATE INDEX calls_started_by_caller ON calls (caller) WHERE state = 'started';

-- One row per user ever in a call. WITHOUT ROWID clusters the rows on the
-- primary key, so a call's users sit together in one page and load with a
-- single range read; the rows are small, which is when WITHOUT ROWID pays.
CREATE TABLE call_users (
    call_seq        INTEGER NOT NULL REFERENCES calls (seq),
    user_id         TEXT    NOT NULL,
    ord             INTEGER NOT NULL,  -- position in the call's user list
    state           TEXT    NOT NULL,
    inviter         TEXT    NOT NULL DEFAULT '',
    extended_data   TEXT    NOT NULL DEFAULT '',
    update_time     INTEGER NOT NULL DEFAULT 0,
    invite_time     INTEGER NOT NULL DEFAULT 0,
    accept_time     INTEGER NOT NULL DEFAULT 0,
    timeout_at      INTEGER NOT NULL DEFAULT 0, -- invitation timeout deadline, 0: none
    not_received_at INTEGER NOT NULL DEFAULT 0, -- notYetReceived deadline, 0: none
    main_device     TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (call_seq, user_id)
) WITHOUT ROWID;

-- Listing a user's calls newest first (GET /calls): a backward range scan on
-- (user_id, call_seq < cursor) that stops after `count` rows, no sort.
CREATE INDEX call_users_by_user ON call_users (user_id, call_seq);

-- The scheduler's per-user deadlines. Partial for the same reason as
-- calls_caller_offline: only pending invitations carry a deadline.
CREATE INDEX call_users_timeout ON call_users (timeout_at) WHERE timeout_at > 0;
CREATE INDEX call_users_not_received ON call_users (not_received_at) WHERE not_received_at > 0;

-- The per-user event log; id is the SSE event id. AUTOINCREMENT so ids are
-- never reused after pruning empties the tail of the log: a Last-Event-ID a
-- client kept can never come to name a different event.
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT    NOT NULL,
    device  TEXT    NOT NULL DEFAULT '', -- '' = every device of the user
    call_id TEXT    NOT NULL DEFAULT '',
    type    TEXT    NOT NULL,
    data    TEXT    NOT NULL,            -- JSON object, stored as text so json_* functions work on it
    time    INTEGER NOT NULL
);

-- Replay for one user after a Last-Event-ID: a range scan in id order.
CREATE INDEX events_by_user ON events (user_id, id);

-- Pruning old events by age deletes from the front of this index.
CREATE INDEX events_by_time ON events (time);

-- Webhook endpoints. Soft-deleted (deleted = 1) so past deliveries keep
-- pointing at a row.
CREATE TABLE webhook_endpoints (
    id              TEXT    PRIMARY KEY,
    url             TEXT    NOT NULL,
    secret          TEXT    NOT NULL,
    -- Subscribed types as ",call.created,call.ended," so a match is one
    -- instr(event_types, ',' || type || ','); '' subscribes to every type.
    event_types     TEXT    NOT NULL DEFAULT '',
    description     TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    enabled         INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT    NOT NULL DEFAULT '',
    deleted         INTEGER NOT NULL DEFAULT 0
);

-- One row per webhook message, whatever the number of endpoints it goes to.
-- payload is the exact body that is signed and sent: {type, timestamp, data}.
CREATE TABLE webhook_messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id     TEXT    NOT NULL UNIQUE, -- the webhook-id header; receivers dedupe on it
    type       TEXT    NOT NULL,
    call_id    TEXT    NOT NULL DEFAULT '',
    payload    BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);

-- The outbox: one row per message x subscribed endpoint, written in the same
-- transaction as the state change that caused it.
CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id       INTEGER NOT NULL REFERENCES webhook_messages (id),
    endpoint_id      TEXT    NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'pending', -- 'pending', 'delivered', 'failed'
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_status_code INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT    NOT NULL DEFAULT '',
    next_attempt_at  INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER NOT NULL DEFAULT 0,
    locked_until     INTEGER NOT NULL DEFAULT 0
);

-- The dispatcher's "what is due next": only pending rows are in it, in due
-- order, so finished deliveries (almost all rows) cost nothing to skip.
-- Queries must spell the literal status = 'pending'.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at) WHERE status = 'pending';

-- An endpoint's delivery history, newest or oldest first, paged by id.
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);

-- With foreign_keys on, deleting a message (pruning) looks up its deliveries;
-- without this index each delete would scan the whole outbox.
CREATE INDEX webhook_deliveries_by_message ON webhook_deliveries (message_id);

-- Idempotency-Key records: status 0 while the first request is in flight,
-- then the stored response replayed to retries with the same fingerprint.
CREATE TABLE idempotency_keys (
    scope        TEXT    NOT NULL, -- e.g. the authenticated user, so keys never collide across users
    key          TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,
    status       INTEGER NOT NULL DEFAULT 0,
    content_type TEXT    NOT NULL DEFAULT '',
    body         BLOB,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);

-- Expiry sweeps delete from the front of this index.
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
