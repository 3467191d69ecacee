-- 0001: the PostgreSQL schema, equal in meaning to SQLite's migrations
-- 0001 to 0005 (db/sqlite/migrations), so the shared row mapping of package
-- db (column lists, scanners) reads both. Times are Unix milliseconds
-- (BIGINT); columns are NOT NULL with defaults so rows scan into plain Go
-- values. Ordering on text is done with COLLATE "C" in the queries, so the
-- order does not depend on the database's locale.

-- One row per call. seq is the paging cursor (nextFlag); an identity is
-- never reused, so a saved cursor never skips or repeats a call.
CREATE TABLE calls (
    seq                BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                 TEXT    NOT NULL UNIQUE,
    caller             TEXT    NOT NULL,
    mode               TEXT    NOT NULL,
    state              TEXT    NOT NULL,
    timeout            BIGINT  NOT NULL,          -- seconds
    extended_data      TEXT    NOT NULL DEFAULT '',
    create_time        BIGINT  NOT NULL,
    end_time           BIGINT  NOT NULL DEFAULT 0,
    end_reason         TEXT    NOT NULL DEFAULT '',
    not_received_check BOOLEAN NOT NULL DEFAULT false,
    caller_tracked     BOOLEAN NOT NULL DEFAULT false,
    caller_offline_at  BIGINT  NOT NULL DEFAULT 0 -- caller-offline deadline, 0: none
);

-- The scheduler's caller-offline deadlines: only armed rows are indexed.
CREATE INDEX calls_caller_offline ON calls (caller_offline_at) WHERE caller_offline_at > 0;
-- A caller's started calls; ended calls, nearly all rows, stay out.
CREATE INDEX calls_started_by_caller ON calls (caller) WHERE state = 'started';
-- The calls the caller-offline rule is re-armed on at start, paged by seq.
CREATE INDEX calls_tracked_started ON calls (seq) WHERE state = 'started' AND caller_tracked;

-- One row per user ever in a call.
CREATE TABLE call_users (
    call_seq            BIGINT  NOT NULL REFERENCES calls (seq),
    user_id             TEXT    NOT NULL,
    ord                 INTEGER NOT NULL,  -- position in the call's user list
    state               TEXT    NOT NULL,
    inviter             TEXT    NOT NULL DEFAULT '',
    extended_data       TEXT    NOT NULL DEFAULT '',
    update_time         BIGINT  NOT NULL DEFAULT 0,
    invite_time         BIGINT  NOT NULL DEFAULT 0,
    accept_time         BIGINT  NOT NULL DEFAULT 0,
    timeout_at          BIGINT  NOT NULL DEFAULT 0, -- invitation timeout deadline, 0: none
    not_received_at     BIGINT  NOT NULL DEFAULT 0, -- notYetReceived deadline, 0: none
    main_device         TEXT    NOT NULL DEFAULT '',
    invitation_event_id BIGINT  NOT NULL DEFAULT 0, -- newest callInvitationReceived to this user in this call
    busy                BOOLEAN NOT NULL DEFAULT false, -- accepted in a started call (the busy check)
    missed_time         BIGINT  NOT NULL DEFAULT 0, -- when call.missed was produced for this user, 0: never
    PRIMARY KEY (call_seq, user_id)
);

-- Listing a user's calls newest first (GET /calls).
CREATE INDEX call_users_by_user ON call_users (user_id, call_seq);
-- The scheduler's per-user deadlines: only pending invitations are indexed.
CREATE INDEX call_users_timeout ON call_users (timeout_at) WHERE timeout_at > 0;
CREATE INDEX call_users_not_received ON call_users (not_received_at) WHERE not_received_at > 0;
-- A user's live invitations by event id (timeout_at > 0 holds exactly while
-- an invitation is pending in a started call).
CREATE INDEX call_users_invitations ON call_users (user_id, invitation_event_id) WHERE timeout_at > 0;
-- The busy check: only users in a live call.
CREATE INDEX call_users_busy ON call_users (user_id) WHERE busy;

-- Event ids (see doc.go). Every id comes from this one sequence, taken
-- while the transaction holds its recipient's event_users row, so a user's
-- ids increase in that user's commit order and are unique across users.
-- CACHE 1 (the default, spelled out): with a per-session cache a later
-- nextval in another session could return a smaller number, and the
-- per-user order would break.
CREATE SEQUENCE event_ids AS BIGINT CACHE 1;

-- One row per user who ever got an event: the newest id given to the user.
-- Updating it takes the row lock that orders the user's writers; it is
-- held until commit, so the next writer's id is taken after this one's
-- events are committed (or rolled back).
CREATE TABLE event_users (
    user_id TEXT   PRIMARY KEY,
    last_id BIGINT NOT NULL
);

-- The per-user event log; id is the SSE event id.
CREATE TABLE events (
    id      BIGINT PRIMARY KEY,
    user_id TEXT   NOT NULL,
    device  TEXT   NOT NULL DEFAULT '', -- '' = every device of the user
    call_id TEXT   NOT NULL DEFAULT '',
    type    TEXT   NOT NULL,
    data    TEXT   NOT NULL,            -- JSON, kept byte for byte as given
    time    BIGINT NOT NULL
);

-- Replay for one user after a Last-Event-ID.
CREATE INDEX events_by_user ON events (user_id, id);
-- Pruning old events by age.
CREATE INDEX events_by_time ON events (time);

-- Webhook endpoints, soft-deleted so past deliveries keep their row.
CREATE TABLE webhook_endpoints (
    id              TEXT    PRIMARY KEY,
    url             TEXT    NOT NULL,
    secret          TEXT    NOT NULL,
    event_types     TEXT    NOT NULL DEFAULT '', -- ",a,b," or '' for every type
    description     TEXT    NOT NULL DEFAULT '',
    created_at      BIGINT  NOT NULL,
    enabled         BOOLEAN NOT NULL DEFAULT true,
    disabled_reason TEXT    NOT NULL DEFAULT '',
    deleted         BOOLEAN NOT NULL DEFAULT false
);

-- One row per webhook message; payload is the exact body signed and sent.
CREATE TABLE webhook_messages (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    msg_id     TEXT   NOT NULL UNIQUE,
    type       TEXT   NOT NULL,
    call_id    TEXT   NOT NULL DEFAULT '',
    payload    BYTEA  NOT NULL,
    created_at BIGINT NOT NULL
);

-- The outbox: one row per message x subscribed endpoint, written in the
-- transaction of the change that caused it. locked_until is the lease of an
-- attempt in flight; claims take rows FOR UPDATE SKIP LOCKED.
CREATE TABLE webhook_deliveries (
    id               BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id       BIGINT  NOT NULL REFERENCES webhook_messages (id),
    endpoint_id      TEXT    NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'pending', -- 'pending', 'delivered', 'failed'
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_status_code INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT    NOT NULL DEFAULT '',
    next_attempt_at  BIGINT  NOT NULL,
    created_at       BIGINT  NOT NULL,
    delivered_at     BIGINT  NOT NULL DEFAULT 0,
    locked_until     BIGINT  NOT NULL DEFAULT 0
);

-- Claims and "when is the next one due" per endpoint, pending rows only.
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
-- Leases held now: a handful of rows.
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (locked_until) WHERE locked_until > 0;
-- An endpoint's delivery history, paged by id.
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);
-- Deleting a message checks its deliveries through this.
CREATE INDEX webhook_deliveries_by_message ON webhook_deliveries (message_id);
-- Queue statistics and retention.
CREATE INDEX webhook_deliveries_by_status_age ON webhook_deliveries (status, created_at);

-- Idempotency-Key records, each written in the transaction of the change
-- it guards; the primary key makes a key unique cluster-wide.
CREATE TABLE idempotency_keys (
    scope        TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,
    status       INTEGER NOT NULL DEFAULT 0,
    content_type TEXT    NOT NULL DEFAULT '',
    body         BYTEA,
    created_at   BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
