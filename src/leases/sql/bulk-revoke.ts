import type { StoreDb } from '../../store/query.js';
import { storeQuery } from '../../store/query.js';
import { prefixUpperBound } from './prefix-range.js';

/** The roles that have unrevoked leases under the prefix issued before a time. */
export async function rolesIssuedBefore(
  db: StoreDb,
  prefix: string,
  before: Date,
): Promise<{ mount: string; role: string }[]> {
  const { rows } = await storeQuery<{ mount: string; role: string }>(db, {
    name: 'credbroker.roles_issued_before',
    text: `SELECT DISTINCT mount, role FROM credbroker_leases WHERE id >= $1 AND id < $2 AND state <> 'revoked' AND issued_at < $3`,
    values: [prefix, prefixUpperBound(prefix), before],
  });
  return rows;
}

/**
 * Marks revoked the leases of a role whose target already ended every credential of it issued
 * before a time. Answers the ids marked: each gets its audit event.
 */
export async function markRoleRevokedBefore(
  db: StoreDb,
  prefix: string,
  mount: string,
  role: string,
  before: Date,
): Promise<string[]> {
  const { rows } = await storeQuery<{ id: string }>(db, {
    name: 'credbroker.mark_role_revoked_before',
    text: `UPDATE credbroker_leases
          SET state = 'revoked', revoke_reason = 'prefix', revoked_at = now(), next_attempt_at = NULL, claimed_until = NULL, last_error = NULL
        WHERE id >= $1 AND id < $2 AND state <> 'revoked' AND mount = $3 AND role = $4 AND issued_at < $5
        RETURNING id`,
    values: [prefix, prefixUpperBound(prefix), mount, role, before],
  });
  return rows.map((r) => r.id);
}

/** Marks every unrevoked lease under the prefix revoked without touching the target. */
export async function forceRevokeUnder(db: StoreDb, prefix: string): Promise<number> {
  const { rowCount } = await storeQuery(db, {
    name: 'credbroker.force_revoke_under',
    text: `UPDATE credbroker_leases
          SET state = 'revoked', revoke_reason = 'forced', revoked_at = now(), next_attempt_at = NULL, claimed_until = NULL
        WHERE id >= $1 AND id < $2 AND state <> 'revoked'`,
    values: [prefix, prefixUpperBound(prefix)],
  });
  return rowCount ?? 0;
}
