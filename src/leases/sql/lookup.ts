import type { StoreDb } from '../../store/query.js';
import { storeQuery } from '../../store/query.js';
import type { FoundLease, LeaseState } from '../lease-row.js';
import { prefixUpperBound } from './prefix-range.js';

/** One lease by id, whatever its state, with its time left by the store's clock. */
export async function findLease(db: StoreDb, id: string): Promise<FoundLease | null> {
  const { rows } = await storeQuery<FoundLease>(db, {
    name: 'credbroker.find_lease',
    text: `SELECT *, extract(epoch FROM expires_at - now())::float8 AS seconds_left FROM credbroker_leases WHERE id = $1`,
    values: [id],
  });
  return rows[0] ?? null;
}

/** Only the state of a lease (null: no such lease), for a caller polling another's revocation. */
export async function leaseState(db: StoreDb, id: string): Promise<LeaseState | null> {
  const { rows } = await storeQuery<{ state: LeaseState }>(db, {
    name: 'credbroker.lease_state',
    text: 'SELECT state FROM credbroker_leases WHERE id = $1',
    values: [id],
  });
  return rows[0]?.state ?? null;
}

/** Ids of leases not yet revoked whose id starts with `prefix` (a btree range on the "C" column); only `owner`'s if given. */
export async function liveIdsWithPrefix(
  db: StoreDb,
  prefix: string,
  owner?: { name: string; auth_mount: string },
): Promise<string[]> {
  const { rows } = await storeQuery<{ id: string }>(db, {
    name: 'credbroker.live_ids_with_prefix',
    text: `SELECT id FROM credbroker_leases WHERE id >= $1 AND id < $2 AND state <> 'revoked'
              AND ($3::text IS NULL OR (identity->>'name' = $3 AND identity->>'auth_mount' = $4)) ORDER BY id`,
    values: [prefix, prefixUpperBound(prefix), owner?.name ?? null, owner?.auth_mount ?? null],
  });
  return rows.map((r) => r.id);
}

/** Leases the reaper gave up on, under a prefix: what an operator must retry or force. A null limit is none. */
export async function irrevocableUnder(db: StoreDb, prefix: string, limit: number | null): Promise<FoundLease[]> {
  const { rows } = await storeQuery<FoundLease>(db, {
    name: 'credbroker.irrevocable_under',
    text: `SELECT *, extract(epoch FROM expires_at - now())::float8 AS seconds_left FROM credbroker_leases
            WHERE id >= $1 AND id < $2 AND state = 'irrevocable' ORDER BY id LIMIT $3`,
    values: [prefix, prefixUpperBound(prefix), limit],
  });
  return rows;
}
