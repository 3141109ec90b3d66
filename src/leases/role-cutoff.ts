import { messageOf } from '../errors.js';
import type { LeaseDeps } from './lease-deps.js';

/**
 * Incident revocation by issue time, for whole roles: where a target can end every credential of
 * a role issued before a time at once (AWS's aws:TokenIssueTime deny), do that, then mark those
 * leases revoked (`markRevoked` answers their ids; each still gets its audit event). Answers how
 * many were marked; roles whose target cannot cut are left to be revoked one by one. A failed cut
 * throws, unless `tolerateFailures`: then it is logged and the role is left to the one-by-one path.
 */
export async function cutRolesAtTargets(
  deps: LeaseDeps,
  roles: { mount: string; role: string }[],
  before: Date,
  opts: {
    markRevoked: (mount: string, role: string) => Promise<string[]>;
    reason: string;
    log: Record<string, unknown>;
    tolerateFailures?: boolean;
  },
): Promise<number> {
  let revoked = 0;
  for (const { mount: mountName, role: roleName } of roles) {
    const mount = deps.mounts.get(mountName);
    const role = mount?.roles.get(roleName);
    if (!mount || !role) continue;
    let cut: boolean;
    try {
      cut = await mount.target.revokeIssuedBefore(role.config, before);
    } catch (err) {
      if (!opts.tolerateFailures) throw err;
      deps.log.warn({ ...opts.log, mount: mountName, role: roleName, err: messageOf(err) }, 'role cut-off failed');
      continue;
    }
    if (!cut) continue;
    const ids = await opts.markRevoked(mountName, roleName);
    await deps.revoker.announceRevoked(ids, opts.reason);
    deps.log.warn(
      { ...opts.log, mount: mountName, role: roleName, before, count: ids.length },
      'every credential of the role issued before the cut-off ended at the target',
    );
    revoked += ids.length;
  }
  return revoked;
}
