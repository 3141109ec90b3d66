-- A creds request's idempotency key (X-Credbroker-Idempotency-Key), as the hex SHA-256 of who asked
-- (auth mount and name), the request path (<mount>/<path>/<role>) and the key: a second request in
-- the same scope is answered with this lease instead of a new one. NULL for a request without a key.
ALTER TABLE credbroker_leases ADD COLUMN idempotency_scope text;

-- At most one live lease per scope, whichever replica inserts it: a racing second request learns of
-- the first from the conflict on its pending insert. A lease that leaves pending/active (revoked,
-- expired and handed to the reaper, a failed issue being cleaned up) leaves the index, so the key
-- mints a new lease. Only keyed rows are in it: a request without a key writes no entry.
CREATE UNIQUE INDEX credbroker_leases_idempotency ON credbroker_leases (idempotency_scope)
  WHERE idempotency_scope IS NOT NULL AND state IN ('pending', 'active');
