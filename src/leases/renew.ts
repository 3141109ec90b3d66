import { InvalidRequest, LeaseExpired, LeaseNotFound } from '../errors.js';
import type { LeaseDeps } from './lease-deps.js';
import { isLeaseIdShape } from './lease-id.js';
import { findLease } from './sql/lookup.js';
import { extendActiveLease } from './sql/renew.js';
import { renewIncrement, ttlCapWarning, wholeSeconds } from './ttl.js';

export interface RenewedLease {
  leaseId: string;
  leaseDuration: number;
  warnings: string[];
}

/**
 * Moves a lease's expiry forward by the increment (default: the role's default_ttl), never past
 * its max_ttl from issue, then tells the engine (PostgreSQL: VALID UNTIL). One clock: the store
 * computes the expiry, the cap and the time left. `ttlCap`: a policy's allowed_ttl.
 */
export async function renewLease(
  deps: LeaseDeps,
  leaseId: string,
  incrementSeconds: number | undefined,
  ttlCap?: number,
): Promise<RenewedLease> {
  const lease = isLeaseIdShape(leaseId) ? await findLease(deps.store.pool, leaseId) : null;
  if (!lease) throw new LeaseNotFound(leaseId);
  const expired = (lease.state === 'active' && lease.seconds_left <= 0) || lease.revoke_reason === 'expired';
  if (expired) throw new LeaseExpired(leaseId);
  if (lease.state !== 'active') throw new LeaseNotFound(leaseId);
  const mount = deps.mounts.get(lease.mount);
  const role = mount?.roles.get(lease.role);
  if (!mount || !role)
    throw new InvalidRequest(`lease ${leaseId} belongs to a role that is no longer configured; it cannot be renewed`);
  if (!lease.renewable || !mount.target.renewable(role.config)) throw new InvalidRequest('lease is not renewable');

  const { asked, increment } = renewIncrement(incrementSeconds, role.common.default_ttl, ttlCap);
  const renewed = await extendActiveLease(deps.store.pool, leaseId, increment, asked);
  if (!renewed) throw new LeaseExpired(leaseId);
  await mount.target.renew({ role: role.config, handle: lease.revoke_handle, expiresAt: renewed.expires_at });
  const leaseDuration = wholeSeconds(renewed.seconds_left);
  return { leaseId, leaseDuration, warnings: renewed.capped ? [ttlCapWarning(asked, leaseDuration)] : [] };
}
