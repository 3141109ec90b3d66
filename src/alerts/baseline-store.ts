import type { StoreDb } from '../store/query.js';
import { storeQuery } from '../store/query.js';

export interface StoredBaseline {
  /** Issues per second as of the merge. */
  rate: number;
  firstSeen: number;
}

/**
 * Adds `delta` (this replica's issues since its last merge, each already weighted and decayed to
 * `now`) to the identity's stored rate decayed from its updated_at to `now`, and returns the
 * result. Both decays use the broker's clock (`now`, ms), never the store's now().
 */
export async function mergeBaseline(
  db: StoreDb,
  merge: { identity: string; delta: number; now: number; firstSeen: number; halfLifeSeconds: number },
): Promise<StoredBaseline> {
  const { rows } = await storeQuery<{ rate: number; first_seen: Date }>(db, {
    name: 'credbroker.merge_alert_baseline',
    text: `INSERT INTO credbroker_alert_baselines AS b (identity, rate, updated_at, first_seen)
           VALUES ($1, $2, to_timestamp($3 / 1000.0), to_timestamp($4 / 1000.0))
           ON CONFLICT (identity) DO UPDATE SET
             rate = b.rate * exp(-ln(2) * greatest(0, $3 / 1000.0 - extract(epoch FROM b.updated_at)) / $5) + $2,
             updated_at = greatest(b.updated_at, excluded.updated_at),
             first_seen = least(b.first_seen, excluded.first_seen)
           RETURNING rate, first_seen`,
    values: [merge.identity, merge.delta, merge.now, merge.firstSeen, merge.halfLifeSeconds],
  });
  return { rate: rows[0]!.rate, firstSeen: rows[0]!.first_seen.getTime() };
}
