import { TargetError } from '../errors.js';
import { claimOrAwait } from './lease-claims.js';
import { waitForOthersMs, type LeaseDeps } from './lease-deps.js';
import { isLeaseIdShape } from './lease-id.js';
import { requireMountOf, resolvePrefix } from './lease-prefix.js';
import type { LeaseRow, RevokeReason } from './lease-row.js';
import { forceRevokeUnder } from './sql/bulk-revoke.js';
import { claimAccessorPage } from './sql/claims.js';

/** Most leases claimed at once by a revocation of many. */
export const REVOKE_PAGE = 1000;

/** Revokes one lease now. Unknown and already revoked leases succeed, as in Vault. */
export async function revokeLease(
  deps: LeaseDeps,
  leaseId: string,
  reason: RevokeReason = 'revoked',
): Promise<{ warnings: string[] }> {
  if (!isLeaseIdShape(leaseId)) return { warnings: [] };
  const claimed = await claimOrAwait(deps.store, leaseId, reason, deps.policy.claim_ttl, waitForOthersMs(deps));
  if (!claimed) return { warnings: [] };
  const outcome = await deps.revoker.revokeClaimed(claimed);
  if (!outcome.ok) {
    const error = outcome.error.startsWith(`${claimed.mount}: `)
      ? outcome.error.slice(claimed.mount.length + 2)
      : outcome.error;
    throw new TargetError(claimed.mount, `${error}; the lease stays queued for retry`);
  }
  return { warnings: earlyRevokeWarnings(deps, claimed) };
}

/** The truth about a credential its target cannot end early: revoked here, alive there until expiry. */
function earlyRevokeWarnings(deps: LeaseDeps, lease: LeaseRow): string[] {
  const facts = deps.mounts.get(lease.mount)?.target.describe(lease.revoke_handle);
  if (!facts || facts.revocableBeforeExpiry || lease.expires_at <= new Date()) return [];
  return [
    `the lease is revoked, but its credential cannot be revoked before it expires at ${lease.expires_at.toISOString()}${facts.note ? `: ${facts.note}` : ''}`,
  ];
}

/** Revokes every live lease a token created (its holder logged out, or the token was revoked). */
export async function revokeByAccessor(deps: LeaseDeps, accessor: string): Promise<number> {
  let revoked = 0;
  for (;;) {
    const page = await claimAccessorPage(
      deps.store.pool,
      accessor,
      REVOKE_PAGE,
      deps.policy.claim_ttl,
      deps.store.holder(),
    );
    if (page.length === 0) return revoked;
    for (const outcome of (await deps.revoker.revokeClaimedMany(page)).values()) if (outcome.ok) revoked++;
    // Failures stay queued with backoff for the reaper; they are not claimable here again.
    if (page.length < REVOKE_PAGE) return revoked;
  }
}

/** Marks leases revoked without reaching the target: for a target that is gone for good. */
export async function revokeForce(deps: LeaseDeps, prefix: string): Promise<number> {
  const { base } = await resolvePrefix(deps, prefix);
  const count = await forceRevokeUnder(deps.store.pool, base);
  if (count === 0) requireMountOf(deps, base);
  deps.log.warn({ prefix, count }, 'leases force-revoked without reaching their targets');
  return count;
}
