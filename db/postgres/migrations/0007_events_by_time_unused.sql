-- 0007: events are pruned from the front of their ids (db.PruneEventsSQL),
-- so no query reads events_by_time any more; every event written kept it
-- up to date for nothing. See SQLite's 0009.
DROP INDEX IF EXISTS events_by_time;
