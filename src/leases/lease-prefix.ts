import { InvalidRequest, UnknownMount } from '../errors.js';
import type { LeaseDeps } from './lease-deps.js';
import { isLeaseIdShape } from './lease-id.js';
import type { FoundLease } from './lease-row.js';
import { findLease } from './sql/lookup.js';

/**
 * The prefix as a path (`…/`), or the one lease it names exactly: as in Vault, a prefix without
 * a trailing slash that is itself a lease id means that lease; otherwise it is a path prefix
 * ("demo/creds/ro" never matches "demo/creds/ro2/…").
 */
export async function resolvePrefix(deps: LeaseDeps, prefix: string): Promise<{ base: string; lease?: FoundLease }> {
  if (prefix === '') throw new InvalidRequest('a prefix is required');
  if (prefix.endsWith('/')) return { base: prefix };
  const lease = isLeaseIdShape(prefix) ? await findLease(deps.store.pool, prefix) : null;
  if (lease) return { base: prefix, lease };
  return { base: `${prefix}/` };
}

/**
 * A prefix that matched nothing must name a configured mount, or the caller made a typo
 * ("dmeo/") and is told so. Checked only after matching nothing, so the leases of a mount
 * since removed from the config can still be listed and force-revoked.
 */
export function requireMountOf(
  deps: LeaseDeps,
  prefix: string,
  opts: { nameConfigured: boolean } = { nameConfigured: true },
): void {
  const mount = prefix.split('/')[0]!;
  if (!deps.mounts.get(mount)) throw new UnknownMount(mount, opts.nameConfigured ? deps.mounts.names() : null);
}
