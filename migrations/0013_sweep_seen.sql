-- The orphan sweep's memory: when each object no live lease owns was first seen on its mount's
-- target. PostgreSQL records no role creation time, so the sweep's grace counts from first sight;
-- a row goes when its object is dropped, gone, or owned by a lease again.
CREATE TABLE credbroker_sweep_seen (
  mount text NOT NULL,
  name text NOT NULL,
  first_seen timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (mount, name)
);
