import type { Identity } from '../auth/identity.js';
import { identityRecord } from '../auth/identity.js';
import type { JsonValue } from '../engines.js';
import {
  IssueRevoked,
  TargetError,
  TargetTimeout,
  UnknownMount,
  UnknownPath,
  UnknownRole,
  messageOf,
} from '../errors.js';
import type { Mount, MountRole } from '../mounts.js';
import { sanitizeError } from './guarded-target.js';
import { idempotencyScope, insertKeyed } from './idempotent-insert.js';
import type { LeaseDeps } from './lease-deps.js';
import type { PendingLease } from './lease-row.js';
import { newLeaseId } from './lease-id.js';
import { extendPending, markForCleanup } from './sql/pending.js';
import { findLease } from './sql/lookup.js';
import { requeueLease } from './sql/revoke-outcome.js';
import { issueTtl, wholeSeconds } from './ttl.js';

export interface IssuedLease {
  leaseId: string;
  leaseDuration: number;
  renewable: boolean;
  data: Record<string, JsonValue>;
  warnings: string[];
}

export interface IssueOptions {
  ttl?: number;
  identity: Identity;
  params?: Record<string, unknown>;
  /** The request path the lease is issued on: `creds`, or one the engine adds. */
  path?: string;
  /** A policy's allowed_ttl, which may cap below the role's max_ttl. */
  ttlCap?: number;
  /**
   * The client's idempotency key (validated at the edge): while a lease issued with it to the same
   * identity on the same path is live, no other is minted (IdempotentLeaseExists names it).
   */
  idempotencyKey?: string;
}

/**
 * Issues a lease, intent first (DESIGN.md): plan, write the pending row, issue on the target,
 * activate the row, and only then hand out the secret.
 */
export async function issueLease(
  deps: LeaseDeps,
  mountName: string,
  roleName: string,
  opts: IssueOptions,
): Promise<IssuedLease> {
  const path = opts.path ?? 'creds';
  const { mount, role } = resolveRole(deps, mountName, path, roleName);
  const { ttl, warnings } = issueTtl(opts.ttl, role.common, opts.ttlCap);
  const leaseId = newLeaseId(mount.name, path, role.name);
  const handle = mount.target.plan({
    mount: mount.name,
    roleName: role.name,
    role: role.config,
    leaseId,
    ttlSeconds: ttl,
    params: opts.params ?? {},
    path,
  });
  const renewable = mount.target.renewable(role.config);
  const scope = opts.idempotencyKey
    ? idempotencyScope(opts.identity, `${mount.name}/${path}/${role.name}`, opts.idempotencyKey)
    : null;
  const pending = await insertPending(deps, role, scope, {
    id: leaseId,
    mount: mount.name,
    role: role.name,
    engine: mount.type,
    handle,
    requester: opts.identity.name,
    identity: identityRecord(opts.identity),
    tokenAccessor: opts.identity.accessor ?? null,
    ttlSeconds: ttl,
    maxTtlSeconds: role.common.max_ttl,
    pendingGraceSeconds: deps.policy.pending_grace,
    renewable,
  });
  const issued = await issueOnTarget(deps, mount, role, { leaseId, handle, expiresAt: pending.expires_at });
  const secondsLeft = await deps.store.activate(leaseId);
  if (secondsLeft === null) await takeBack(deps, mount, { leaseId, handle, expiresAt: pending.expires_at });
  deps.log.info({ lease_id: leaseId, ttl }, 'lease issued');
  // The TTL ran from the pending insert: a slow target has used part of it already.
  return { leaseId, leaseDuration: wholeSeconds(secondsLeft!), renewable, data: issued.data, warnings };
}

function resolveRole(
  deps: LeaseDeps,
  mountName: string,
  path: string,
  roleName: string,
): { mount: Mount; role: MountRole } {
  const mount = deps.mounts.get(mountName);
  if (!mount)
    throw new UnknownPath(`${mountName}/${path}/${roleName}`, [
      new UnknownMount(mountName, deps.mounts.names()).message,
    ]);
  if (!mount.paths.includes(path)) throw new UnknownPath(`${mountName}/${path}/${roleName}`);
  const role = mount.roles.get(roleName);
  if (!role) throw new UnknownRole(roleName);
  return { mount, role };
}

function insertPending(
  deps: LeaseDeps,
  role: MountRole,
  scope: string | null,
  lease: PendingLease,
): Promise<{ expires_at: Date }> {
  const quota = { perRole: role.common.max_active_leases, perIdentity: role.common.max_active_leases_per_identity };
  const unlimited = quota.perRole === undefined && quota.perIdentity === undefined;
  if (scope) return insertKeyed(deps, lease, scope, unlimited ? null : quota);
  if (unlimited) return deps.store.insertPending(lease);
  return deps.store.insertPendingWithinQuota(lease, quota);
}

type Planned = { leaseId: string; handle: PendingLease['handle']; expiresAt: Date };

/** Step 3. On failure, whatever the target may have half-created is due for cleanup. */
async function issueOnTarget(deps: LeaseDeps, mount: Mount, role: MountRole, lease: Planned) {
  // While the engine works, keep the pending row out of the reaper's hands: only an issuer
  // that died (or lost the store) lets its grace run out.
  const heartbeat = keepPending(deps, lease.leaseId);
  let issued;
  try {
    issued = await mount.target.issue({
      roleName: role.name,
      role: role.config,
      handle: lease.handle,
      expiresAt: lease.expiresAt,
    });
  } catch (err) {
    // Only once the engine's work is over: a timed-out call may still create the credential after we stopped waiting.
    const cleanup = () => {
      clearInterval(heartbeat);
      return markForCleanup(deps.store.pool, lease.leaseId, sanitizeError(messageOf(err))).catch((e) =>
        deps.log.warn(
          { lease_id: lease.leaseId, err: messageOf(e) },
          'could not mark failed issue for cleanup; the pending grace will',
        ),
      );
    };
    if (err instanceof TargetTimeout) void err.settled.then(cleanup);
    else await cleanup();
    // A client's revoke of the pending lease ends its issuing transaction on the target.
    if (!(err instanceof TargetTimeout) && (await revokedByClient(deps, lease.leaseId)))
      throw new IssueRevoked(lease.leaseId);
    throw err;
  }
  clearInterval(heartbeat);
  return issued;
}

/**
 * The pending row was taken from us before activation: the secret must not be handed out. The
 * reaper judged this issue crashed, or a client's revoke (the lease, its prefix, its token)
 * reached the pending row first. Revokes what was just created; always throws.
 */
async function takeBack(deps: LeaseDeps, mount: Mount, lease: Planned): Promise<never> {
  // If the reaper already closed the row, put it back in the queue until this revoke succeeds.
  await mount.target
    .revoke({ handle: lease.handle, expiresAt: lease.expiresAt })
    .catch((err) => requeueLease(deps.store.pool, lease.leaseId, sanitizeError(messageOf(err))));
  if (await revokedByClient(deps, lease.leaseId)) throw new IssueRevoked(lease.leaseId);
  throw new TargetError(mount.name, 'issue took longer than the pending grace; the credential was revoked');
}

/** True when a client's revoke (not the reaper's cleanup of a crashed issue) took the lease. */
async function revokedByClient(deps: LeaseDeps, leaseId: string): Promise<boolean> {
  const reason = (await findLease(deps.store.pool, leaseId).catch(() => null))?.revoke_reason;
  return reason === 'revoked' || reason === 'prefix' || reason === 'forced';
}

function keepPending(deps: LeaseDeps, leaseId: string): NodeJS.Timeout {
  const grace = deps.policy.pending_grace;
  const timer = setInterval(
    () => void extendPending(deps.store.pool, leaseId, grace).catch(() => undefined),
    (grace * 1000) / 3,
  );
  timer.unref();
  return timer;
}
