import type { Logger } from 'pino';
import type { ReaperConfig } from '../config/schema.js';
import type { VerifyCheck } from '../engines.js';
import { LeaseNotFound, UnknownPath } from '../errors.js';
import type { BrokerMetrics, LeaseOperation } from '../metrics/broker-metrics.js';
import type { MountRegistry } from '../mounts.js';
import { issueLease, type IssuedLease, type IssueOptions } from './issue.js';
import type { LeaseDeps } from './lease-deps.js';
import { isLeaseIdShape } from './lease-id.js';
import { requireMountOf } from './lease-prefix.js';
import type { FoundLease, RevokeReason } from './lease-row.js';
import type { LeaseStore } from './lease-store.js';
import { toLeaseView, type LeaseView } from './lease-view.js';
import { renewLease, type RenewedLease } from './renew.js';
import { revokeByAccessor, revokeForce, revokeLease } from './revoke.js';
import { revokePrefix } from './revoke-prefix.js';
import type { Revoker } from './revoker.js';
import { irrevocableCountsByMount } from './sql/irrevocable-count.js';
import { findLease, irrevocableUnder, liveIdsWithPrefix } from './sql/lookup.js';

export type { IssuedLease, RenewedLease };

/** A lease id's mount: its first segment (`<mount>/creds/<role>/<random>`). */
const mountOf = (leaseId: string): string => leaseId.split('/', 1)[0] ?? '';

/**
 * The lease lifecycle, for the API and the CLI: issue (issue.ts), renew (renew.ts), revoke one,
 * by token, by force (revoke.ts) or by prefix (revoke-prefix.ts), and the reads. Answers with
 * LeaseView, never the table's row.
 */
export class LeaseService {
  private readonly deps: LeaseDeps;

  constructor(
    store: LeaseStore,
    mounts: MountRegistry,
    revoker: Revoker,
    policy: ReaperConfig,
    log: Logger,
    engineTimeoutSeconds = 10,
    private readonly metrics?: BrokerMetrics,
  ) {
    this.deps = { store, mounts, revoker, policy, log, engineTimeoutSeconds };
  }

  issue(mountName: string, roleName: string, opts: IssueOptions): Promise<IssuedLease> {
    return this.timed('issue', mountName, () => issueLease(this.deps, mountName, roleName, opts));
  }

  /** `ttlCap`: a policy's allowed_ttl, which may cap below the role's own maximum. */
  renew(leaseId: string, incrementSeconds: number | undefined, ttlCap?: number): Promise<RenewedLease> {
    return this.timed('renew', mountOf(leaseId), () => renewLease(this.deps, leaseId, incrementSeconds, ttlCap));
  }

  revoke(leaseId: string, reason: RevokeReason = 'revoked'): Promise<{ warnings: string[] }> {
    return this.timed('revoke', mountOf(leaseId), () => revokeLease(this.deps, leaseId, reason));
  }

  revokePrefix(prefix: string, issuedBefore: Date | null = null): Promise<{ revoked: number }> {
    return revokePrefix(this.deps, prefix, issuedBefore);
  }

  revokeByAccessor(accessor: string): Promise<number> {
    return revokeByAccessor(this.deps, accessor);
  }

  revokeForce(prefix: string): Promise<number> {
    return revokeForce(this.deps, prefix);
  }

  /** Any lease ever issued, revoked ones included (they are the audit trail). */
  async lookup(leaseId: string): Promise<LeaseView> {
    const lease = await this.find(leaseId);
    if (!lease) throw new LeaseNotFound(leaseId, 'invalid lease');
    return lease;
  }

  /** A lease by id, or null; for authorization before acting on it. */
  async find(leaseId: string): Promise<LeaseView | null> {
    const row = isLeaseIdShape(leaseId) ? await findLease(this.deps.store.pool, leaseId) : null;
    return row ? this.view(row) : null;
  }

  /** Leases whose revocation failed for good under a prefix (at most `limit`, by id; null: all): for the operator. */
  async irrevocable(prefix: string, limit: number | null = 1000): Promise<LeaseView[]> {
    return (await irrevocableUnder(this.deps.store.pool, prefix, limit)).map((row) => this.view(row));
  }

  /** How many leases are irrevocable, by mount name. */
  irrevocableCounts(): Promise<Map<string, number>> {
    return irrevocableCountsByMount(this.deps.store.pool);
  }

  /** What the mount's engine needs on its target, checked now (privileges, groups), with fixes. */
  async verifyMount(mountName: string): Promise<{ ok: boolean; checks: VerifyCheck[] }> {
    const mount = this.deps.mounts.get(mountName);
    if (!mount) throw new UnknownPath(`${mountName}/config/verify`);
    const checks = await mount.target.verify([...mount.roles.values()].map((r) => r.config));
    return { ok: checks.every((c) => c.ok), checks };
  }

  /** Vault's LIST: the next path segment of every live lease under the prefix (only `owner`'s, if given). */
  async listChildren(prefix: string, owner?: { name: string; auth_mount: string }): Promise<string[]> {
    const base = prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`;
    const keys = new Set<string>();
    for (const id of await liveIdsWithPrefix(this.deps.store.pool, base, owner)) {
      const rest = id.slice(base.length);
      const slash = rest.indexOf('/');
      keys.add(slash === -1 ? rest : rest.slice(0, slash + 1));
    }
    // A caller limited to its own leases is not told every mount's name.
    if (keys.size === 0 && base !== '') requireMountOf(this.deps, base, { nameConfigured: !owner });
    return [...keys].sort();
  }

  private timed<T>(operation: LeaseOperation, mount: string, work: () => Promise<T>): Promise<T> {
    return this.metrics ? this.metrics.timeLeaseOperation(operation, mount, work) : work();
  }

  private view(row: FoundLease): LeaseView {
    const facts = this.deps.mounts.get(row.mount)?.target.describe(row.revoke_handle) ?? {
      revocableBeforeExpiry: true,
    };
    return toLeaseView(row, facts);
  }
}
