-- Broker tokens: only a hash of each token is stored. The accessor names a token without being it.
CREATE TABLE credbroker_tokens (
  accessor       text PRIMARY KEY,
  token_hash     bytea NOT NULL UNIQUE,
  identity       jsonb NOT NULL,
  policies       text[] NOT NULL,
  issued_at      timestamptz NOT NULL DEFAULT now(),
  expires_at     timestamptz NOT NULL,
  max_expires_at timestamptz NOT NULL,
  revoke_leases  boolean NOT NULL,
  revoked_at     timestamptz
);

-- Who holds each lease, and through which token.
ALTER TABLE credbroker_leases ADD COLUMN identity jsonb;
ALTER TABLE credbroker_leases ADD COLUMN token_accessor text;

-- Revoking a token revokes its leases; quotas count live leases per identity.
CREATE INDEX credbroker_leases_live_by_accessor ON credbroker_leases (token_accessor) WHERE state <> 'revoked';
CREATE INDEX credbroker_leases_live_by_identity ON credbroker_leases ((identity->>'name'), (identity->>'auth_mount')) WHERE state IN ('pending', 'active');
CREATE INDEX credbroker_leases_live_by_role ON credbroker_leases (mount, role) WHERE state IN ('pending', 'active');
