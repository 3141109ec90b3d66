-- Incident revocation jobs (src/jobs/): what an operator asked to revoke, recorded before any of it
-- is revoked, so a job survives the process that started it and any replica carries it on.
CREATE TABLE credbroker_jobs (
  id            text PRIMARY KEY,
  kind          text NOT NULL CHECK (kind IN ('revoke')),
  -- The operator's selector, as validated (src/jobs/lease-selector.ts): what was asked, for the record.
  selector      jsonb NOT NULL,
  state         text NOT NULL CHECK (state IN ('running', 'done')),
  requested_by  text NOT NULL,
  reason        text,
  created_at    timestamptz NOT NULL DEFAULT now(),
  finished_at   timestamptz,
  total         integer NOT NULL,
  -- Counted in the same statement that records each lease's outcome, so they never drift.
  revoked       integer NOT NULL DEFAULT 0,
  failed        integer NOT NULL DEFAULT 0,
  -- The process running it (its process lock key) and until when; a lapsed or dead claim is taken over.
  claimed_by    integer,
  claimed_until timestamptz
);
CREATE INDEX credbroker_jobs_running ON credbroker_jobs (created_at) WHERE state = 'running';
CREATE INDEX credbroker_jobs_created ON credbroker_jobs (created_at DESC);

-- The leases a job selected, fixed when it was created: a lease issued later is not the job's.
CREATE TABLE credbroker_job_leases (
  job_id   text NOT NULL REFERENCES credbroker_jobs (id) ON DELETE CASCADE,
  lease_id text COLLATE "C" NOT NULL,
  -- NULL: still to do. 'failed' leases stay queued with the reaper's backoff (or are irrevocable).
  outcome  text CHECK (outcome IN ('revoked', 'failed')),
  error    text,
  done_at  timestamptz,
  PRIMARY KEY (job_id, lease_id)
);
CREATE INDEX credbroker_job_leases_todo ON credbroker_job_leases (job_id, lease_id) WHERE outcome IS NULL;
CREATE INDEX credbroker_job_leases_failed ON credbroker_job_leases (job_id, lease_id) WHERE outcome = 'failed';
