import type { StoreDb } from '../../store/query.js';
import { storeQuery } from '../../store/query.js';

/** Irrevocable leases per mount: an index-only count on the partial index of irrevocable leases. */
export async function irrevocableCountsByMount(db: StoreDb): Promise<Map<string, number>> {
  const { rows } = await storeQuery<{ mount: string; n: number }>(db, {
    name: 'credbroker.irrevocable_counts_by_mount',
    text: `SELECT mount, count(*)::int AS n FROM credbroker_leases WHERE state = 'irrevocable' GROUP BY mount ORDER BY mount`,
    values: [],
  });
  return new Map(rows.map((r) => [r.mount, r.n]));
}
