-- The audit trail, when the postgres audit sink is on: one row per request, response or engine event.
-- Secret-bearing fields of `data` arrive already HMAC'd; nothing here is a plaintext secret.
CREATE TABLE credbroker_audit (
  id             bigserial PRIMARY KEY,
  time           timestamptz NOT NULL,
  type           text NOT NULL CHECK (type IN ('request', 'response', 'event')),
  request_id     text NOT NULL,
  identity       jsonb,
  remote_address text,
  operation      text,
  path           text,
  lease_id       text,
  outcome        text,
  status         integer,
  error          text,
  data           jsonb
);

CREATE INDEX credbroker_audit_time ON credbroker_audit (time);

-- Many records (lists, logins, reads of creds before a lease exists) carry no lease id: keep them out of this index.
CREATE INDEX credbroker_audit_lease_id ON credbroker_audit (lease_id) WHERE lease_id IS NOT NULL;

CREATE INDEX credbroker_audit_identity_name ON credbroker_audit ((identity ->> 'name'));
