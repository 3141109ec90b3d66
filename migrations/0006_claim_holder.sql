-- Which broker process holds a live claim: the key of the session advisory lock that process
-- holds on the store while it runs. When a process dies, PostgreSQL drops its connection and the
-- lock with it, so any replica can see at once that the claim's holder is gone and take the lease
-- over, without waiting for the claim to lapse. NULL: no holder known (the claim TTL decides).
ALTER TABLE credbroker_leases ADD COLUMN claimed_by integer;
CREATE INDEX credbroker_leases_claim_holders ON credbroker_leases (claimed_by) WHERE state = 'revoking' AND claimed_by IS NOT NULL;
