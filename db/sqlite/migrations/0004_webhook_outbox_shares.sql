-- 0004: the webhook outbox claimed per endpoint, and pruned.

-- Claims take each endpoint's share in due order, and the dispatcher asks
-- each endpoint when its next delivery is due: both walk this index from
-- (endpoint_id, oldest due), so a backlog of one endpoint (down, or its
-- circuit breaker open) is never scanned to reach another's deliveries.
-- Partial on the literal status = 'pending': finished deliveries, nearly
-- all rows, stay out. It replaces webhook_deliveries_due, whose one global
-- due order made the claim hand every worker to the oldest backlog.
DROP INDEX webhook_deliveries_due;
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';

-- Leases held by attempts in flight (or by a process that crashed during
-- one): only those rows have locked_until > 0, a handful, so "when does the
-- next lease end" is the first entry. Queries must spell locked_until > 0.
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (locked_until)
    WHERE locked_until > 0;

-- Queue statistics (pending count, oldest pending) and retention (finished
-- deliveries older than the retention, oldest first) are range scans on
-- (status, created_at): neither reads a row of the table.
CREATE INDEX webhook_deliveries_by_status_age ON webhook_deliveries (status, created_at);
