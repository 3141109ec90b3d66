import { RevokeIncomplete } from '../errors.js';
import { awaitClaims } from './lease-claims.js';
import { waitForOthersMs, type LeaseDeps } from './lease-deps.js';
import { requireMountOf, resolvePrefix } from './lease-prefix.js';
import { REVOKE_PAGE, revokeLease } from './revoke.js';
import { cutRolesAtTargets } from './role-cutoff.js';
import { markRoleRevokedBefore, rolesIssuedBefore } from './sql/bulk-revoke.js';
import { claimPrefixPage, liveClaimsUnder } from './sql/claims.js';

/**
 * Revokes every lease under a prefix (only those issued before `issuedBefore`, if given), page
 * by page, continuing past failures, and reports each failure. A prefix that is itself a lease
 * id revokes that lease (see resolvePrefix).
 */
export async function revokePrefix(
  deps: LeaseDeps,
  prefix: string,
  issuedBefore: Date | null = null,
): Promise<{ revoked: number }> {
  const { base, lease } = await resolvePrefix(deps, prefix);
  if (lease) {
    if (lease.state === 'revoked' || (issuedBefore && lease.issued_at >= issuedBefore)) return { revoked: 0 };
    await revokeLease(deps, base, 'prefix');
    return { revoked: 1 };
  }
  let revoked = issuedBefore ? await revokeWholeRoles(deps, base, issuedBefore) : 0;
  const failures = new Map<string, string>();
  // Leases another process (a reaper) is revoking are left to it, and waited for, as revokeLease
  // does; whatever that did not revoke in time is claimed and revoked here. Read first, so
  // those it finishes while the pass below runs still count.
  const inFlight = await liveClaimsUnder(deps.store.pool, base, issuedBefore);
  revoked += await revokePages(deps, base, issuedBefore, false, failures);
  if (inFlight.length) {
    revoked += await awaitClaims(deps.store.pool, inFlight, waitForOthersMs(deps));
    revoked += await revokePages(deps, base, issuedBefore, true, failures);
  }
  if (failures.size)
    throw new RevokeIncomplete(
      revoked,
      [...failures].map(([leaseId, error]) => ({ leaseId, error })),
    );
  if (revoked === 0) requireMountOf(deps, base);
  return { revoked };
}

/** One pass over the prefix, page by page; `failures` keeps each lease's last failure. */
async function revokePages(
  deps: LeaseDeps,
  base: string,
  issuedBefore: Date | null,
  takeOver: boolean,
  failures: Map<string, string>,
): Promise<number> {
  let revoked = 0;
  const page = {
    prefix: base,
    limit: REVOKE_PAGE,
    reason: 'prefix' as const,
    ttlSeconds: deps.policy.claim_ttl,
    holder: deps.store.holder(),
  };
  for (let after = base; ;) {
    const claimed = await claimPrefixPage(deps.store.pool, { ...page, after }, { issuedBefore, takeOver });
    if (claimed.length === 0) return revoked;
    for (const [leaseId, outcome] of await deps.revoker.revokeClaimedMany(claimed)) {
      if (!outcome.ok) {
        failures.set(leaseId, outcome.error);
        continue;
      }
      failures.delete(leaseId);
      revoked++;
    }
    after = claimed[claimed.length - 1]!.id;
    deps.log.info({ prefix: base, revoked, failed: failures.size }, 'revoke-prefix progress');
  }
}

/** The roles under the prefix that their targets can cut at once, cut; their leases marked revoked. */
async function revokeWholeRoles(deps: LeaseDeps, prefix: string, before: Date): Promise<number> {
  return cutRolesAtTargets(deps, await rolesIssuedBefore(deps.store.pool, prefix, before), before, {
    markRevoked: (mount, role) => markRoleRevokedBefore(deps.store.pool, prefix, mount, role, before),
    reason: 'prefix',
    log: { prefix },
  });
}
