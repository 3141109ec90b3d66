-- The lease table: one row per credential the broker ever created, written before the credential exists.
CREATE TABLE credbroker_leases (
  -- Vault's shape: <mount>/creds/<role>/<random>. "C" collation so a prefix is a plain btree range.
  id              text COLLATE "C" PRIMARY KEY,
  mount           text NOT NULL,
  role            text NOT NULL,
  engine          text NOT NULL,
  state           text NOT NULL CHECK (state IN ('pending', 'active', 'revoking', 'revoked', 'irrevocable')),
  -- Everything needed to destroy the credential; never a secret.
  revoke_handle   jsonb NOT NULL,
  requester       text,
  issued_at       timestamptz NOT NULL DEFAULT now(),
  expires_at      timestamptz NOT NULL,
  max_expires_at  timestamptz NOT NULL,
  last_renewal    timestamptz,
  renewable       boolean NOT NULL DEFAULT true,
  attempts        integer NOT NULL DEFAULT 0,
  -- When the reaper next acts on this lease: the pending grace, the expiry, a claim's timeout or a
  -- retry's backoff. NULL exactly when the state is terminal (revoked, irrevocable).
  next_attempt_at timestamptz,
  last_error      text,
  revoked_at      timestamptz,
  revoke_reason   text CHECK (revoke_reason IN ('expired', 'revoked', 'prefix', 'forced', 'cleanup')),
  CHECK ((next_attempt_at IS NULL) = (state IN ('revoked', 'irrevocable')))
);

-- What is due: only live rows are in it, so it stays small however many revoked rows accumulate.
CREATE INDEX credbroker_leases_due ON credbroker_leases (next_attempt_at) WHERE next_attempt_at IS NOT NULL;

-- Live leases by id, for list and revoke-prefix without walking revoked history.
CREATE INDEX credbroker_leases_live_by_id ON credbroker_leases (id) WHERE state <> 'revoked';

-- Irrevocable leases, for operators and metrics.
CREATE INDEX credbroker_leases_irrevocable ON credbroker_leases (mount, role) WHERE state = 'irrevocable';
