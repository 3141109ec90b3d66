import type { StoreDb } from '../../store/query.js';
import { storeQuery } from '../../store/query.js';

export interface LiveLeaseCount {
  mount: string;
  state: string;
  n: number;
}

/**
 * Leases not yet revoked, by mount and state: one GROUP BY over the partial index of live leases,
 * so its cost follows the live leases, not the revoked history the table keeps.
 */
export async function liveLeaseCounts(db: StoreDb): Promise<LiveLeaseCount[]> {
  const { rows } = await storeQuery<LiveLeaseCount>(db, {
    name: 'credbroker.live_lease_counts',
    text: `SELECT mount, state, count(*)::int AS n FROM credbroker_leases WHERE state <> 'revoked' GROUP BY mount, state`,
    values: [],
  });
  return rows;
}
