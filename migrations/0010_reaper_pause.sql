-- The reaper's pause switch, one row for every replica: while `paused`, no reaper claims an expiry
-- or a stale pending lease (their rows stay due and are claimed at the first tick after resume).
-- Revocations already begun (state revoking: retries, lapsed claims) and explicit revokes still run.
CREATE TABLE credbroker_reaper_pause (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  paused boolean NOT NULL DEFAULT false,
  since timestamptz,
  paused_by text,
  reason text
);
INSERT INTO credbroker_reaper_pause (singleton) VALUES (true);

-- Revocations already begun, by when they are due: what a paused reaper still claims, found
-- without walking the (possibly large) queue of held expiries.
CREATE INDEX credbroker_leases_revoking_due ON credbroker_leases (next_attempt_at) WHERE state = 'revoking';
