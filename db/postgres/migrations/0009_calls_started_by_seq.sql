-- callsig:no-transaction
-- 0009: the started calls, indexed by seq rather than by caller; see
-- SQLite's 0011. calls_started_by_caller (0001) serves only the count of
-- started calls (the callsig_calls gauge), since a caller's calls are read
-- through calls_presence (0005), yet every call's start and end wrote an
-- entry of it keyed by caller: with many callers, a page of its own for
-- each. Keyed by seq, a new call's entry goes at the right edge.
--
-- Built CONCURRENTLY, outside a transaction (see noTransaction in
-- migrate.go), so the nodes still running the previous version keep
-- writing calls while it builds. The first DROP clears an index a failed
-- run left invalid.
DROP INDEX CONCURRENTLY IF EXISTS calls_started;
CREATE INDEX CONCURRENTLY calls_started ON calls (seq) WHERE state = 'started';
DROP INDEX CONCURRENTLY IF EXISTS calls_started_by_caller;
