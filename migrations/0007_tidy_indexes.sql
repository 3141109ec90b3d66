-- The token-expiry sweep (every 5 s on every replica): live tokens that take their leases with
-- them, by expiry. Partial, so the tokens already ended are not in it.
CREATE INDEX credbroker_tokens_expiring ON credbroker_tokens (expires_at) WHERE revoked_at IS NULL AND revoke_leases;

-- The tidy: revoked leases by when they were revoked, tokens by when they ended (expired or
-- revoked, whichever came first); audit rows go by credbroker_audit_time.
CREATE INDEX credbroker_leases_revoked_at ON credbroker_leases (revoked_at) WHERE state = 'revoked';
CREATE INDEX credbroker_tokens_ended ON credbroker_tokens (least(expires_at, revoked_at));

-- No query reads these (checked with EXPLAIN on a store of 30,000 leases): the per-identity
-- quota counts within its role's live leases (credbroker_leases_live_by_role serves it), and the
-- broker never reads its audit table. Each cost a write on every lease or every audited request;
-- an operator who searches the audit table by lease or identity adds the index they need.
DROP INDEX credbroker_leases_live_by_identity;
DROP INDEX credbroker_audit_lease_id;
DROP INDEX credbroker_audit_identity_name;
