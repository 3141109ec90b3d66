import type { StoreDb } from '../store/query.js';
import { storeQuery } from '../store/query.js';

export type SeenKind = 'role' | 'network';

/**
 * Records that `identity` used `value` (a role, a source network). Answers whether this call
 * added the pair, so of two replicas seeing it at once exactly one reports it, and whether the
 * identity had other values of this kind before (a first network matters only after others).
 */
export async function markSeen(
  db: StoreDb,
  pair: { kind: SeenKind; identity: string; value: string; now: number },
): Promise<{ first: boolean; hadOthers: boolean }> {
  const { rows } = await storeQuery<{ had_others: boolean }>(db, {
    name: 'credbroker.mark_alert_seen',
    text: `INSERT INTO credbroker_alert_seen (kind, identity, value, first_at)
           VALUES ($1, $2, $3, to_timestamp($4 / 1000.0))
           ON CONFLICT DO NOTHING
           RETURNING EXISTS (SELECT 1 FROM credbroker_alert_seen s
                              WHERE s.kind = $1 AND s.identity = $2 AND s.value <> $3) AS had_others`,
    values: [pair.kind, pair.identity, pair.value, pair.now],
  });
  return { first: rows.length > 0, hadOthers: rows[0]?.had_others ?? false };
}
