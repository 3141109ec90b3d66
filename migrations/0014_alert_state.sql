-- What the alert detectors share between replicas (src/alerts/).

-- Each identity's issue rate, an exponentially weighted average in issues per second as of
-- updated_at. Replicas merge their own counts into it with an UPSERT that first decays the stored
-- rate by the time since updated_at, so all of them read one baseline.
CREATE TABLE credbroker_alert_baselines (
  identity text PRIMARY KEY,
  rate double precision NOT NULL,
  updated_at timestamptz NOT NULL,
  first_seen timestamptz NOT NULL
);

-- (identity, role) and (identity, source network) pairs already seen: the INSERT that adds a pair
-- is the one replica that reports its first use.
CREATE TABLE credbroker_alert_seen (
  kind text NOT NULL CHECK (kind IN ('role', 'network')),
  identity text NOT NULL,
  value text NOT NULL,
  first_at timestamptz NOT NULL,
  PRIMARY KEY (kind, identity, value)
);
