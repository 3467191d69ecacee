-- callsig:no-transaction
-- 0011: an endpoint's deliveries by status, newest first; see SQLite's
-- 0013 (a listing with ?status= filtered the endpoint's whole log).
--
-- Built CONCURRENTLY, outside a transaction (see noTransaction in
-- migrate.go), so the nodes still running the previous version keep
-- writing deliveries while it builds. The DROP clears an index a failed
-- run left invalid.
DROP INDEX CONCURRENTLY IF EXISTS webhook_deliveries_by_endpoint_status;
CREATE INDEX CONCURRENTLY webhook_deliveries_by_endpoint_status ON webhook_deliveries (endpoint_id, status, id);
