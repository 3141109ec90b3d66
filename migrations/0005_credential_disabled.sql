-- When a revocation took the credential's power away (it cannot authenticate, no session of it
-- remains) but its cleanup failed: the lease stays queued for the cleanup, and lookup says the
-- credential is disabled meanwhile.
ALTER TABLE credbroker_leases ADD COLUMN credential_disabled_at timestamptz;
