import type pg from 'pg';
import { QuotaExceeded } from '../errors.js';
import type { StoreDb } from '../store/query.js';
import { inStoreTransaction } from '../store/query.js';
import type { PendingLease, Quota } from './lease-row.js';
import { countLiveOfRole, insertPendingRows, lockRoleQuota } from './sql/pending.js';

/**
 * The pending insert of a role with quotas: counted and written under a transaction-scoped
 * advisory lock on the role, so concurrent issues on any replica cannot both take the last place.
 */
export function insertWithinQuota(pool: pg.Pool, lease: PendingLease, quota: Quota): Promise<{ expires_at: Date }> {
  return inStoreTransaction(pool, async (client) => {
    await takeQuotaPlace(client, lease, quota);
    const [out] = await insertPendingRows(client, [lease]);
    return out!;
  });
}

/**
 * Inside a transaction: locks the role's quota until commit and throws QuotaExceeded when the
 * lease would not fit. The insert that follows in the same transaction takes the place.
 */
export async function takeQuotaPlace(client: StoreDb, lease: PendingLease, quota: Quota): Promise<void> {
  await lockRoleQuota(client, lease.mount, lease.role);
  const identity = lease.identity as { name?: string; auth_mount?: string } | null | undefined;
  const { total, mine } = await countLiveOfRole(client, lease.mount, lease.role, identity ?? null);
  if (quota.perRole !== undefined && total >= quota.perRole) {
    throw new QuotaExceeded(`quota reached: role ${lease.mount}/${lease.role} allows ${quota.perRole} active leases`);
  }
  if (quota.perIdentity !== undefined && mine >= quota.perIdentity) {
    throw new QuotaExceeded(
      `quota reached: ${identity?.name ?? 'this identity'} may hold ${quota.perIdentity} active leases of ${lease.mount}/${lease.role}`,
    );
  }
}
