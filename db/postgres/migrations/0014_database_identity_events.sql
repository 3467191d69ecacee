-- 0014: the events table's oid joins the database's identity (identity.go):
-- a dump restored into the database it was taken from (pg_restore --clean)
-- keeps the server, the database's oid and the timeline, and brings back
-- the dump's database_identity row, but creates the events table anew.
-- Null until a node of this version fills it (an unknown part is ignored).
ALTER TABLE database_identity ADD COLUMN IF NOT EXISTS events_oid BIGINT;
