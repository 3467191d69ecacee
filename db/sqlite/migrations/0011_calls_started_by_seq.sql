-- 0011: the started calls, indexed by seq rather than by caller.
--
-- Since 0007 a caller's calls are read through calls_presence, so
-- calls_started_by_caller (0001) served only the count of started calls
-- (the callsig_calls gauge), while every call's start and end wrote an
-- entry of it keyed by caller: with many callers, a page of its own for
-- each. Keyed by seq, a new call's entry goes at the right edge, which
-- every new call shares, and the calls a claim of deadlines ends (created
-- together, so due together) sit side by side. With 1,000 callers a
-- deadline fired took 8 % less CPU
-- (BenchmarkFireDeadlines/batched-1000-pairs, docs/benchmarks.md).
DROP INDEX IF EXISTS calls_started_by_caller;
CREATE INDEX calls_started ON calls (seq) WHERE state = 'started';
