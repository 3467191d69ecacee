-- 0012: the identity of the database the nodes last served (identity.go).
-- A node that finds the database is another one than the row says (a
-- dump restored into a new database, a point-in-time restore, a promoted
-- replica, a copy) moves the event ids on past a restore mark before any
-- of its sessions writes: the ids the lost database gave after the copy
-- was made are never given again, and a client holding one is reset.
-- One row; the nodes still running the previous version never read it.
CREATE TABLE IF NOT EXISTS database_identity (
    only_row     BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    system_id    BIGINT,
    database_oid BIGINT,
    timeline     BIGINT,
    updated_at   BIGINT NOT NULL
);
