import type { StoreDb } from '../store/query.js';
import { storeQuery } from '../store/query.js';

export interface StoredBaseline {
  /** Issues per second as of the merge. */
  rate: number;
  firstSeen: number;
}

export interface BaselineMerge {
  now: number;
  halfLifeSeconds: number;
  /** This replica's issues since its last merge, per identity, each weighted and decayed to `now`. */
  deltas: { identity: string; delta: number; firstSeen: number }[];
}

/** Identities merged by one statement: bounds its size at any number of identities. */
const CHUNK = 1000;

/**
 * Adds each identity's delta to its stored rate decayed from updated_at to `now`, and answers the
 * merged rates. Both decays use the broker's clock (`now`, ms), never the store's now(). Rows are
 * upserted in identity order, so two replicas merging overlapping sets lock them in one order.
 */
export async function mergeBaselines(db: StoreDb, merge: BaselineMerge): Promise<Map<string, StoredBaseline>> {
  const sorted = [...merge.deltas].sort((x, y) => (x.identity < y.identity ? -1 : x.identity > y.identity ? 1 : 0));
  const merged = new Map<string, StoredBaseline>();
  for (let i = 0; i < sorted.length; i += CHUNK) {
    const chunk = sorted.slice(i, i + CHUNK);
    const { rows } = await storeQuery<{ identity: string; rate: number; first_seen: Date }>(db, {
      name: 'credbroker.merge_alert_baselines',
      text: `INSERT INTO credbroker_alert_baselines AS b (identity, rate, updated_at, first_seen)
             SELECT u.identity, u.delta, to_timestamp($4 / 1000.0), to_timestamp(u.first_seen / 1000.0)
               FROM unnest($1::text[], $2::float8[], $3::float8[]) WITH ORDINALITY AS u(identity, delta, first_seen, n)
              ORDER BY u.n
             ON CONFLICT (identity) DO UPDATE SET
               rate = b.rate * exp(-ln(2) * greatest(0, $4 / 1000.0 - extract(epoch FROM b.updated_at)) / $5)
                      + excluded.rate,
               updated_at = greatest(b.updated_at, excluded.updated_at),
               first_seen = least(b.first_seen, excluded.first_seen)
             RETURNING identity, rate, first_seen`,
      values: [
        chunk.map((d) => d.identity),
        chunk.map((d) => d.delta),
        chunk.map((d) => d.firstSeen),
        merge.now,
        merge.halfLifeSeconds,
      ],
    });
    for (const row of rows) merged.set(row.identity, { rate: row.rate, firstSeen: row.first_seen.getTime() });
  }
  return merged;
}
