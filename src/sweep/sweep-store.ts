import type pg from 'pg';
import { asStoreFailure, storeQuery, type StoreDb } from '../store/query.js';

/** States in which a lease's credential exists or may yet: its object is owned, never an orphan. */
export const LIVE_STATES = ['pending', 'active', 'revoking', 'irrevocable'] as const;

/**
 * Which of `names` a live lease's handle names under `handleKey`, on any mount: two mounts with
 * one prefix on one cluster see each other's roles, and a role leased elsewhere is no orphan.
 */
export async function namesOwnedByLiveLeases(db: StoreDb, handleKey: string, names: string[]): Promise<Set<string>> {
  if (names.length === 0) return new Set();
  const { rows } = await storeQuery<{ name: string }>(db, {
    name: 'credbroker.sweep_live_owners',
    // `state <> 'revoked'` says again what LIVE_STATES says, in the words of the partial index on
    // live leases, so a table of millions of revoked rows is not walked for a few live ones.
    text: `SELECT DISTINCT revoke_handle ->> $1 AS name FROM credbroker_leases
            WHERE state <> 'revoked' AND state = ANY($2) AND revoke_handle ->> $1 = ANY($3)`,
    values: [handleKey, LIVE_STATES, names],
  });
  return new Set(rows.map((r) => r.name));
}

export interface Sighting {
  name: string;
  firstSeen: Date;
  /** Old enough to be an orphan: its creation time, else its first sight, at least the grace ago. */
  due: boolean;
}

/**
 * Records the first sight of each unowned object (once), forgets every other object of the mount
 * (dropped, gone, or leased again), and tells which are past the grace. One clock: the store's.
 */
export async function recordSightings(
  db: StoreDb,
  mount: string,
  objects: { name: string; createdAt?: Date }[],
  graceSeconds: number,
): Promise<Sighting[]> {
  const names = objects.map((o) => o.name);
  await storeQuery(db, {
    name: 'credbroker.sweep_forget_others',
    text: 'DELETE FROM credbroker_sweep_seen WHERE mount = $1 AND NOT (name = ANY($2))',
    values: [mount, names],
  });
  if (objects.length === 0) return [];
  const { rows } = await storeQuery<{ name: string; first_seen: Date; due: boolean }>(db, {
    name: 'credbroker.sweep_record_sightings',
    text: `WITH listed AS (SELECT * FROM unnest($2::text[], $3::timestamptz[]) AS l(name, created_at)),
                fresh AS (INSERT INTO credbroker_sweep_seen (mount, name)
                          SELECT $1, name FROM listed ON CONFLICT (mount, name) DO NOTHING
                          RETURNING name, first_seen)
           SELECT l.name, coalesce(f.first_seen, s.first_seen) AS first_seen,
                  coalesce(l.created_at, f.first_seen, s.first_seen) <= now() - make_interval(secs => $4) AS due
             FROM listed l
             LEFT JOIN fresh f ON f.name = l.name
             LEFT JOIN credbroker_sweep_seen s ON s.mount = $1 AND s.name = l.name
            ORDER BY l.name`,
    values: [mount, names, objects.map((o) => o.createdAt ?? null), graceSeconds],
  });
  return rows.map((r) => ({ name: r.name, firstSeen: r.first_seen, due: r.due }));
}

/** An object dropped by the sweep: no first sight to remember. */
export async function forgetSighting(db: StoreDb, mount: string, name: string): Promise<void> {
  await storeQuery(db, {
    name: 'credbroker.sweep_forget',
    text: 'DELETE FROM credbroker_sweep_seen WHERE mount = $1 AND name = $2',
    values: [mount, name],
  });
}

/**
 * Runs `work` holding the mount's sweep lock, across replicas (a session advisory lock on a
 * connection of its own, held over the engine calls, no transaction left open); null when another
 * replica holds it. The lock goes with the connection if the process dies.
 */
export async function withMountSweepLock<T>(pool: pg.Pool, mount: string, work: () => Promise<T>): Promise<T | null> {
  const client = await pool.connect().catch((err: unknown) => Promise.reject(asStoreFailure(err)));
  let locked: boolean;
  try {
    const { rows } = await client.query<{ locked: boolean }>(
      "SELECT pg_try_advisory_lock(hashtext('credbroker sweep'), hashtext($1)) AS locked",
      [mount],
    );
    locked = rows[0]!.locked;
  } catch (err) {
    client.release(err as Error);
    throw asStoreFailure(err);
  }
  if (!locked) {
    client.release();
    return null;
  }
  let broken: Error | undefined;
  try {
    return await work();
  } finally {
    // A connection that failed to unlock is discarded, and the lock goes with it.
    await client
      .query("SELECT pg_advisory_unlock(hashtext('credbroker sweep'), hashtext($1))", [mount])
      .catch((err: Error) => (broken = err));
    client.release(broken);
  }
}
