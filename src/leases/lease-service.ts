import type { Logger } from 'pino';
import type { ReaperConfig } from '../config/schema.js';
import { identityRecord, type Identity } from '../auth/identity.js';
import type { HandleFacts, JsonValue, VerifyCheck } from '../engines.js';
import { InvalidRequest, LeaseExpired, LeaseNotFound, IssueRevoked, RevokeIncomplete, TargetError, TargetTimeout, UnknownMount, UnknownPath, UnknownRole, messageOf } from '../errors.js';
import type { MountRegistry } from '../mounts.js';
import { sanitizeError } from './guarded-target.js';
import { isLeaseIdShape, newLeaseId } from './lease-id.js';
import type { LeaseRow, LeaseStore, PendingLease, RevokeReason } from './lease-store.js';
import type { Revoker } from './revoker.js';

export interface IssuedLease {
  leaseId: string;
  leaseDuration: number;
  renewable: boolean;
  data: Record<string, JsonValue>;
  warnings: string[];
}

export interface RenewedLease {
  leaseId: string;
  leaseDuration: number;
  warnings: string[];
}

const REVOKE_PREFIX_PAGE = 1000;

const secondsUntil = (date: Date) => Math.max(0, Math.round((date.getTime() - Date.now()) / 1000));

function ttlCapWarning(requested: number, max: number): string {
  return `TTL of "${requested}s" exceeded the effective max_ttl of "${max}s"; TTL value is capped accordingly`;
}

/** The lease lifecycle: issue (intent first), lookup, renew, revoke one / by prefix / by force. */
export class LeaseService {
  constructor(
    private readonly store: LeaseStore,
    private readonly mounts: MountRegistry,
    private readonly revoker: Revoker,
    private readonly policy: ReaperConfig,
    private readonly log: Logger,
    /** The bound on one engine call (config engine_timeout): how long a revoke waits for another process's. */
    private readonly engineTimeoutSeconds = 10,
  ) {}

  async issue(
    mountName: string,
    roleName: string,
    opts: { ttl?: number; identity: Identity; params?: Record<string, unknown>; path?: string; ttlCap?: number },
  ): Promise<IssuedLease> {
    const path = opts.path ?? 'creds';
    const mount = this.mounts.get(mountName);
    if (!mount) throw new UnknownPath(`${mountName}/${path}/${roleName}`, [new UnknownMount(mountName, this.mounts.names()).message]);
    if (!mount.paths.includes(path)) throw new UnknownPath(`${mountName}/${path}/${roleName}`);
    const role = mount.roles.get(roleName);
    if (!role) throw new UnknownRole(roleName);

    const warnings: string[] = [];
    let ttl = opts.ttl || role.common.default_ttl;
    // A policy's allowed_ttl may cap below the role's max_ttl.
    const cap = Math.min(role.common.max_ttl, opts.ttlCap ?? Infinity);
    if (ttl > cap) {
      warnings.push(ttlCapWarning(ttl, cap));
      ttl = cap;
    }

    const leaseId = newLeaseId(mount.name, path, role.name);
    const handle = mount.target.plan({ mount: mount.name, roleName: role.name, role: role.config, leaseId, ttlSeconds: ttl, params: opts.params ?? {}, path });
    const renewable = mount.target.renewable(role.config);
    const quota = { perRole: role.common.max_active_leases, perIdentity: role.common.max_active_leases_per_identity };
    const insert = (lease: PendingLease) =>
      quota.perRole === undefined && quota.perIdentity === undefined ? this.store.insertPending(lease) : this.store.insertPendingWithinQuota(lease, quota);
    const pending = await insert({
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
      pendingGraceSeconds: this.policy.pending_grace,
      renewable,
    });

    // While the engine works, keep the pending row out of the reaper's hands: only an issuer
    // that died (or lost the store) lets its grace run out.
    const heartbeat = this.keepPending(leaseId);
    let issued;
    try {
      issued = await mount.target.issue({ roleName: role.name, role: role.config, handle, expiresAt: pending.expires_at });
    } catch (err) {
      // Whatever the target may have half-created is due for cleanup, but only once the engine's
      // work is over: a timed-out call may still create the credential after we stopped waiting.
      const markForCleanup = () => {
        clearInterval(heartbeat);
        return this.store.markForCleanup(leaseId, sanitizeError(messageOf(err))).catch((e) =>
          this.log.warn({ lease_id: leaseId, err: messageOf(e) }, 'could not mark failed issue for cleanup; the pending grace will'),
        );
      };
      if (err instanceof TargetTimeout) void err.settled.then(markForCleanup);
      else await markForCleanup();
      // A client's revoke of the pending lease ends its issuing transaction on the target.
      if (!(err instanceof TargetTimeout) && (await this.revokedByClient(leaseId))) throw new IssueRevoked(leaseId);
      throw err;
    }
    clearInterval(heartbeat);

    if (!(await this.store.activate(leaseId))) {
      // The reaper judged this issue crashed and took the row: the secret must not be handed out.
      // If the reaper already closed the row, put it back in the queue until this revoke succeeds.
      await mount.target.revoke({ handle, expiresAt: pending.expires_at }).catch((err) => this.store.requeue(leaseId, sanitizeError(messageOf(err))));
      // Or a client's revoke (the lease, its prefix, its token) reached the pending row first.
      if (await this.revokedByClient(leaseId)) throw new IssueRevoked(leaseId);
      throw new TargetError(mount.name, 'issue took longer than the pending grace; the credential was revoked');
    }
    this.log.info({ lease_id: leaseId, ttl }, 'lease issued');
    // The TTL ran from the pending insert: a slow target has used part of it already.
    return { leaseId, leaseDuration: secondsUntil(pending.expires_at), renewable, data: issued.data, warnings };
  }

  /** True when a client's revoke (not the reaper's cleanup of a crashed issue) took the lease. */
  private async revokedByClient(leaseId: string): Promise<boolean> {
    const reason = (await this.store.find(leaseId).catch(() => null))?.revoke_reason;
    return reason === 'revoked' || reason === 'prefix' || reason === 'forced';
  }

  private keepPending(leaseId: string): NodeJS.Timeout {
    const timer = setInterval(
      () => void this.store.extendPending(leaseId, this.policy.pending_grace).catch(() => undefined),
      (this.policy.pending_grace * 1000) / 3,
    );
    timer.unref();
    return timer;
  }

  /** Any lease ever issued, revoked ones included (they are the audit trail). */
  async lookup(leaseId: string): Promise<LeaseRow> {
    const lease = isLeaseIdShape(leaseId) ? await this.store.find(leaseId) : null;
    if (!lease) throw new LeaseNotFound(leaseId, 'invalid lease');
    return lease;
  }

  /** `ttlCap`: a policy's allowed_ttl, which may cap below the role's own maximum. */
  async renew(leaseId: string, incrementSeconds: number | undefined, ttlCap?: number): Promise<RenewedLease> {
    const lease = isLeaseIdShape(leaseId) ? await this.store.find(leaseId) : null;
    if (!lease) throw new LeaseNotFound(leaseId);
    const expired = (lease.state === 'active' && lease.expires_at <= new Date()) || lease.revoke_reason === 'expired';
    if (expired) throw new LeaseExpired(leaseId);
    if (lease.state !== 'active') throw new LeaseNotFound(leaseId);
    const mount = this.mounts.get(lease.mount);
    const role = mount?.roles.get(lease.role);
    if (!mount || !role) throw new InvalidRequest(`lease ${leaseId} belongs to a role that is no longer configured; it cannot be renewed`);
    if (!lease.renewable || !mount.target.renewable(role.config)) throw new InvalidRequest('lease is not renewable');

    const asked = incrementSeconds || role.common.default_ttl;
    const increment = Math.min(asked, ttlCap ?? Infinity);
    const expiresAt = new Date(Math.min(Date.now() + increment * 1000, lease.max_expires_at.getTime()));
    const capped = expiresAt.getTime() < Date.now() + asked * 1000 - 1000;
    const updated = await this.store.extend(leaseId, expiresAt);
    if (!updated) throw new LeaseExpired(leaseId);
    await mount.target.renew({ role: role.config, handle: lease.revoke_handle, expiresAt });
    const warnings = capped ? [ttlCapWarning(asked, secondsUntil(expiresAt))] : [];
    return { leaseId, leaseDuration: secondsUntil(expiresAt), warnings };
  }

  /** Revokes one lease now. Unknown and already revoked leases succeed, as in Vault. */
  async revoke(leaseId: string, reason: RevokeReason = 'revoked'): Promise<{ warnings: string[] }> {
    if (!isLeaseIdShape(leaseId)) return { warnings: [] };
    const claimed = await this.store.claims.claimOrAwait(leaseId, reason, this.policy.claim_ttl, this.waitForOthersMs());
    if (!claimed) return { warnings: [] };
    const outcome = await this.revoker.revokeClaimed(claimed);
    if (!outcome.ok) {
      const error = outcome.error.startsWith(`${claimed.mount}: `) ? outcome.error.slice(claimed.mount.length + 2) : outcome.error;
      throw new TargetError(claimed.mount, `${error}; the lease stays queued for retry`);
    }
    return { warnings: this.earlyRevokeWarnings(claimed) };
  }

  /** The truth about a credential its target cannot end early: revoked here, alive there until expiry. */
  private earlyRevokeWarnings(lease: LeaseRow): string[] {
    const facts = this.mounts.get(lease.mount)?.target.describe(lease.revoke_handle);
    if (!facts || facts.revocableBeforeExpiry || lease.expires_at <= new Date()) return [];
    return [`the lease is revoked, but its credential cannot be revoked before it expires at ${lease.expires_at.toISOString()}${facts.note ? `: ${facts.note}` : ''}`];
  }

  /** What lookup adds about the credential itself. */
  facts(lease: LeaseRow): HandleFacts {
    return this.mounts.get(lease.mount)?.target.describe(lease.revoke_handle) ?? { revocableBeforeExpiry: true };
  }

  /**
   * Revokes every lease under a prefix, page by page, continuing past failures, and reports each
   * failure. As in Vault, a prefix without a trailing slash that is itself a lease id revokes that
   * lease; otherwise it is a path prefix ("demo/creds/ro" never matches "demo/creds/ro2/…").
   */
  async revokePrefix(prefix: string, issuedBefore: Date | null = null): Promise<{ revoked: number }> {
    const { base, lease } = await this.resolvePrefix(prefix);
    if (lease) {
      if (lease.state === 'revoked' || (issuedBefore && lease.issued_at >= issuedBefore)) return { revoked: 0 };
      await this.revoke(base, 'prefix');
      return { revoked: 1 };
    }
    let revoked = issuedBefore ? await this.revokeWholeRoles(base, issuedBefore) : 0;
    const failures = new Map<string, string>();
    // Leases another process (a reaper) is revoking are left to it, and waited for, as revoke()
    // does; whatever that did not revoke in time is claimed and revoked here. Read first, so
    // those it finishes while the pass below runs still count.
    const inFlight = await this.store.claims.liveClaimsUnder(base, issuedBefore);
    revoked += await this.revokePages(base, issuedBefore, false, failures);
    if (inFlight.length) {
      revoked += await this.store.claims.awaitClaims(inFlight, this.waitForOthersMs());
      revoked += await this.revokePages(base, issuedBefore, true, failures);
    }
    if (failures.size) throw new RevokeIncomplete(revoked, [...failures].map(([leaseId, error]) => ({ leaseId, error })));
    if (revoked === 0) this.requireMountOf(base);
    return { revoked };
  }

  /** One pass over the prefix, page by page; `failures` keeps each lease's last failure. */
  private async revokePages(base: string, issuedBefore: Date | null, takeOver: boolean, failures: Map<string, string>): Promise<number> {
    let revoked = 0;
    for (let after = base; ; ) {
      const page = await this.store.claims.claimPrefixPage(base, after, REVOKE_PREFIX_PAGE, 'prefix', this.policy.claim_ttl, { issuedBefore, takeOver });
      if (page.length === 0) return revoked;
      for (const [leaseId, outcome] of await this.revoker.revokeClaimedMany(page)) {
        if (!outcome.ok) {
          failures.set(leaseId, outcome.error);
          continue;
        }
        failures.delete(leaseId);
        revoked++;
      }
      after = page[page.length - 1]!.id;
      this.log.info({ prefix: base, revoked, failed: failures.size }, 'revoke-prefix progress');
    }
  }

  /** How long a revoke waits for another process's revocation of the same lease before taking it over. */
  private waitForOthersMs(): number {
    return (this.engineTimeoutSeconds + this.policy.claim_ttl) * 1000;
  }

  /**
   * Incident revocation by issue time: where a target can end every credential of a role issued
   * before a time at once (AWS's aws:TokenIssueTime deny), do that and mark those leases revoked
   * in one statement; the rest are revoked one by one by the caller.
   */
  private async revokeWholeRoles(prefix: string, before: Date): Promise<number> {
    let revoked = 0;
    for (const { mount: mountName, role: roleName } of await this.store.rolesIssuedBefore(prefix, before)) {
      const mount = this.mounts.get(mountName);
      const role = mount?.roles.get(roleName);
      if (!mount || !role || !(await mount.target.revokeIssuedBefore(role.config, before))) continue;
      const ids = await this.store.markRoleRevokedBefore(prefix, mountName, roleName, before);
      await this.revoker.announceRevoked(ids, 'prefix');
      const count = ids.length;
      this.log.warn({ mount: mountName, role: roleName, before, count }, 'every credential of the role issued before the cut-off ended at the target');
      revoked += count;
    }
    return revoked;
  }

  /** Revokes every live lease a token created (its holder logged out, or the token was revoked). */
  async revokeByAccessor(accessor: string): Promise<number> {
    let revoked = 0;
    for (;;) {
      const page = await this.store.claims.claimAccessorPage(accessor, REVOKE_PREFIX_PAGE, this.policy.claim_ttl);
      if (page.length === 0) return revoked;
      for (const outcome of (await this.revoker.revokeClaimedMany(page)).values()) if (outcome.ok) revoked++;
      // Failures stay queued with backoff for the reaper; they are not claimable here again.
      if (page.length < REVOKE_PREFIX_PAGE) return revoked;
    }
  }

  /** Marks leases revoked without reaching the target: for a target that is gone for good. */
  async revokeForce(prefix: string): Promise<number> {
    const { base } = await this.resolvePrefix(prefix);
    const count = await this.store.forceRevoke(base);
    if (count === 0) this.requireMountOf(base);
    this.log.warn({ prefix, count }, 'leases force-revoked without reaching their targets');
    return count;
  }

  /** Leases whose revocation failed for good under a prefix (at most 1,000): for the operator. */
  irrevocable(prefix: string): Promise<LeaseRow[]> {
    return this.store.irrevocable(prefix, 1000);
  }

  /** What the mount's engine needs on its target, checked now (privileges, groups), with fixes. */
  async verifyMount(mountName: string): Promise<{ ok: boolean; checks: VerifyCheck[] }> {
    const mount = this.mounts.get(mountName);
    if (!mount) throw new UnknownPath(`${mountName}/config/verify`);
    const checks = await mount.target.verify([...mount.roles.values()].map((r) => r.config));
    return { ok: checks.every((c) => c.ok), checks };
  }

  /** A lease by id, or null; for authorization before acting on it. */
  find(leaseId: string): Promise<LeaseRow | null> {
    return isLeaseIdShape(leaseId) ? this.store.find(leaseId) : Promise.resolve(null);
  }

  /** Vault's LIST: the next path segment of every live lease under the prefix (only `owner`'s, if given). */
  async listChildren(prefix: string, owner?: { name: string; auth_mount: string }): Promise<string[]> {
    const base = prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`;
    const keys = new Set<string>();
    for (const id of await this.store.liveIdsWithPrefix(base, owner)) {
      const rest = id.slice(base.length);
      const slash = rest.indexOf('/');
      keys.add(slash === -1 ? rest : rest.slice(0, slash + 1));
    }
    // A caller limited to its own leases is not told every mount's name.
    if (keys.size === 0 && base !== '') this.requireMountOf(base, { nameConfigured: !owner });
    return [...keys].sort();
  }

  /**
   * A prefix that matched nothing must name a configured mount, or the caller made a typo
   * ("dmeo/") and is told so. Checked only after matching nothing, so the leases of a mount
   * since removed from the config can still be listed and force-revoked.
   */
  private requireMountOf(prefix: string, opts: { nameConfigured: boolean } = { nameConfigured: true }): void {
    const mount = prefix.split('/')[0]!;
    if (!this.mounts.get(mount)) throw new UnknownMount(mount, opts.nameConfigured ? this.mounts.names() : null);
  }

  /** The prefix as a path (`…/`), or the one lease it names exactly (Vault's revoke-prefix on a lease id). */
  private async resolvePrefix(prefix: string): Promise<{ base: string; lease?: LeaseRow }> {
    if (prefix === '') throw new InvalidRequest('a prefix is required');
    if (prefix.endsWith('/')) return { base: prefix };
    const lease = isLeaseIdShape(prefix) ? await this.store.find(prefix) : null;
    if (lease) return { base: prefix, lease };
    return { base: `${prefix}/` };
  }
}
