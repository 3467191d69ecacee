-- 0003: a check in SQL for the statements a write transaction sends with
-- its COMMIT (db/postgres/pipe.go). Their results are read only once
-- COMMIT has run, so a statement that finds what it wrote wrong (a call to
-- update that does not exist, an invitation to a user not in its call)
-- must fail itself, and with it the transaction, rather than leave the
-- check to Go. VOLATILE: the planner never evaluates it ahead of time, so
-- it runs only on the branch that calls it.
CREATE FUNCTION callsig_fail(code TEXT, msg TEXT) RETURNS BIGINT
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = code, MESSAGE = msg;
END
$$;
