-- `credbroker audit query` pages by (time, id) within a filter. 0007 dropped the lease and
-- identity indexes while nothing read the table; the query reads it now, so each filter gets the
-- index it needs, each as narrow as its filter allows (every index is a write per audited request).

-- --username: a database username maps back to its lease through the issue's response record,
-- whose data.data.username the postgres engine declares plain. Partial: only issue responses
-- carry a username.
CREATE INDEX credbroker_audit_username ON credbroker_audit ((data -> 'data' ->> 'username'))
  WHERE type = 'response' AND data -> 'data' ->> 'username' IS NOT NULL;

-- --lease, and the records of the lease a username maps to. Lists, logins and reads before a
-- lease exists carry none: partial.
CREATE INDEX credbroker_audit_lease_id ON credbroker_audit (lease_id) WHERE lease_id IS NOT NULL;

-- --identity: with the name alone the planner walks the time index and filters (through all of a
-- million rows when the identity's records are the newest); under the name in (time, id) order,
-- one index range answers each page.
CREATE INDEX credbroker_audit_identity_time ON credbroker_audit ((identity ->> 'name'), time, id);
