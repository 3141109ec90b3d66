-- Response wrapping: a wrapped answer, single use, until it expires. The wrapping token itself is
-- never stored, only its SHA-256; the answer is AES-256-GCM ciphertext under a key derived from the
-- token (HKDF-SHA256 with the row's salt), so the store alone cannot read it (src/wrapping/seal.ts).
CREATE TABLE credbroker_wrapped_responses (
  token_hash    bytea PRIMARY KEY,
  accessor      text NOT NULL UNIQUE,
  creation_path text NOT NULL,
  creation_time timestamptz NOT NULL DEFAULT now(),
  expires_at    timestamptz NOT NULL,
  salt          bytea NOT NULL CHECK (octet_length(salt) = 32),
  iv            bytea NOT NULL CHECK (octet_length(iv) = 12),
  ciphertext    bytea NOT NULL,
  auth_tag      bytea NOT NULL CHECK (octet_length(auth_tag) = 16)
);

-- The tidy deletes expired rows, oldest first.
CREATE INDEX credbroker_wrapped_responses_expires_at ON credbroker_wrapped_responses (expires_at);
