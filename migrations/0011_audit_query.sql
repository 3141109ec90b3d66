-- `credbroker audit query --username`: a database username maps back to its lease through the
-- response record of the issue, whose data.data.username the postgres engine declares plain.
-- Partial: only issue responses carry a username, so the index stays a small fraction of the table.
CREATE INDEX credbroker_audit_username ON credbroker_audit ((data -> 'data' ->> 'username'))
  WHERE type = 'response' AND data -> 'data' ->> 'username' IS NOT NULL;
