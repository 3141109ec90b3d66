-- A live claim on a lease being revoked: set when a reaper (or an operator's revoke) claims the
-- row, renewed by that process's heartbeat while its revocation runs, cleared when the outcome is
-- recorded. A row in 'revoking' whose claimed_until has passed belongs to a process that died; a
-- row in 'revoking' with claimed_until NULL is waiting for a retry after a failure.
-- next_attempt_at moves with it, so a lapsed claim is due again at once.
ALTER TABLE credbroker_leases ADD COLUMN claimed_until timestamptz;
